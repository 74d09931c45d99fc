from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """Pretend business systems (orders, CRM notes, refunds) served by the control plane
    itself under /sandbox/, so the demo's HTTP tools work offline. Not part of the governed
    stack: only the demo seeder (apps.tools.demo) imports it, the gateway reaches it over
    HTTP like any other system, and its URLs are off unless SANDBOX_ENABLED (default: with
    DEBUG)."""

    name = "apps.sandbox"
    label = "sandbox"
    verbose_name = "Sandbox systems (demo only)"
