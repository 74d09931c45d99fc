"""The audit trail. Every app writes through ``audit.record`` (``from apps import audit``)."""

from .events import EventType

__all__ = ["EventType", "record"]


def record(event_type: str, **fields) -> None:
    """Record an audit event; see apps.audit.services.record."""
    from .services import record as _record

    _record(event_type, **fields)
