"""The audit trail. Every app writes through ``audit.record`` (``from apps import audit``)."""

from .events import EventType

__all__ = ["EventType", "change_and_record", "record", "storable"]


def record(event_type: str, **fields) -> None:
    """Record an audit event; see apps.audit.services.record."""
    from .services import record as _record

    _record(event_type, **fields)


def change_and_record(statement: str, params, event_type: str, **fields) -> bool:
    """Run one row's INSERT/UPDATE and record its event atomically; see
    apps.audit.services.change_and_record."""
    from .services import change_and_record as _change_and_record

    return _change_and_record(statement, params, event_type, **fields)


def storable(value):
    """``value`` with what the database cannot store (NUL, unpaired surrogates, NaN)
    replaced; see apps.audit.services.storable."""
    from .services import storable as _storable

    return _storable(value)
