from django.apps import AppConfig


class ToolsConfig(AppConfig):
    name = "apps.tools"
    label = "tools"
    verbose_name = "Tools"

    def ready(self) -> None:
        from apps.agents.demo import register_demo_seeder
        from apps.approvals.rules import register_approver_roles

        from . import builtins, selectors
        from .demo import seed_tools

        builtins.register()
        register_demo_seeder(seed_tools)
        register_approver_roles(selectors.approver_roles)
