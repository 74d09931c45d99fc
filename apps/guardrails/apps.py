from django.apps import AppConfig


class GuardrailsConfig(AppConfig):
    name = "apps.guardrails"
    label = "guardrails"
    verbose_name = "Guardrails"

    def ready(self) -> None:
        # The audit trail redacts with these detectors (audit imports no other app).
        from apps.audit.redaction import redact_structure, register_redactor

        register_redactor(lambda value, found: redact_structure(value, found, _redact_text))


def _redact_text(text: str, found: set) -> str:
    """The guardrail detectors first, then the audit trail's own as a safety net: the
    union of both is what the trail keeps out."""
    from apps.audit.redaction import redact_text

    from . import detectors

    redacted, kinds = detectors.redact(text)
    found.update(kinds)
    return redact_text(redacted, found)
