from django.apps import AppConfig


class ToolsConfig(AppConfig):
    name = "apps.tools"
    label = "tools"
    verbose_name = "Tools"

    def ready(self) -> None:
        from apps.agents.demo import register_demo_seeder

        from . import builtins
        from .demo import seed_tools

        builtins.register()
        register_demo_seeder(seed_tools)
