from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "apps.knowledge"
    label = "knowledge"
    verbose_name = "Knowledge"

    def ready(self) -> None:
        from apps.agents.demo import register_demo_seeder

        from .demo import seed_knowledge

        register_demo_seeder(seed_knowledge)
