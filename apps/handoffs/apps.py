from django.apps import AppConfig


class HandoffsConfig(AppConfig):
    name = "apps.handoffs"
    label = "handoffs"
    verbose_name = "Handoffs"

    def ready(self) -> None:
        from apps.agents.demo import register_demo_seeder

        from .demo import seed_handoffs

        register_demo_seeder(seed_handoffs)
