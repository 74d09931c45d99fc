from django.apps import AppConfig


class EvalsConfig(AppConfig):
    name = "apps.evals"
    label = "evals"
    verbose_name = "Evaluations and rollout gates"

    def ready(self) -> None:
        from apps.agents.demo import register_demo_seeder
        from apps.agents.services import register_promotion_check

        from .demo import seed_evals
        from .services import promotion_shortfalls

        # Agents sit below evals: the gate into a more autonomous mode is asked through this hook.
        register_promotion_check(promotion_shortfalls)
        # After knowledge, tools and handoffs (INSTALLED_APPS order): the starter cases name their sources.
        register_demo_seeder(seed_evals)
