from django.apps import AppConfig


class RuntimeConfig(AppConfig):
    name = "apps.runtime"
    label = "runtime"

    def ready(self) -> None:
        from apps.handoffs.services import register_package_builder

        from .handoff_package import for_tool_handoff

        # A handoff the handoff.create tool makes mid-turn gets the conversation's package too.
        register_package_builder(for_tool_handoff)
