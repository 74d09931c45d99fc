"""Writing the audit trail. ``record`` is the only writer (``from apps import audit;
audit.record(...)``); chain.py appends what it queues."""

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection, transaction

from . import exports
from .canonical import canonical_json
from .chain import chain_head, chain_pending_quietly
from .checkpoints import write_checkpoint
from .events import EventType
from .models import PendingEvent
from .redaction import redact
from .selectors import export_rows

_EVENT_TYPE = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")
_LIMITS = {"tool": 100, "decision": 32, "reason": 100, "outcome": 32, "conversation_id": 64, "turn_id": 64}


def _ref(value) -> tuple[int | None, str]:
    """(id, name) of a model instance, or of an id given as is. Rows keep values, not
    foreign keys, so the record survives what it names being renamed or deleted."""
    if value is None:
        return None, ""
    if isinstance(value, int):
        return value, ""
    name = getattr(value, "slug", None) or (value.get_username() if hasattr(value, "get_username") else str(value))
    return value.pk, name


def _text(value) -> str | None:
    return None if value is None or value == "" else str(value)


def build_body(
    event_type: str,
    *,
    tenant=None,
    actor=None,
    actor_roles=(),
    agent=None,
    conversation_id=None,
    turn_id=None,
    tool: str = "",
    arguments=None,
    decision: str = "",
    guardrail_verdict=None,
    approval_status: str = "",
    approver=None,
    outcome: str = "",
    latency_ms: float | None = None,
    model: str = "",
    prompt_version=None,
    cost: Decimal | float | None = None,
    sources=(),
    reason: str = "",
    payload: dict | None = None,
    occurred_at: datetime | None = None,
) -> str:
    """The canonical JSON body of one event, redacted. Raises ValueError on bad input,
    before anything is written."""
    if not _EVENT_TYPE.match(event_type or ""):
        raise ValueError(
            f"Audit event type must be a dotted lower-case name such as 'tool.executed', not {event_type!r}."
        )
    for field, limit in _LIMITS.items():
        value = locals()[field]
        if value is not None and len(str(value)) > limit:
            raise ValueError(f"Audit field {field} is longer than {limit} characters.")
    if payload is not None and not isinstance(payload, dict):
        raise ValueError("Audit payload must be a dict.")
    occurred = occurred_at or datetime.now(UTC)
    if occurred.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware.")
    occurred = occurred.astimezone(UTC)
    tenant_id, tenant_name = _ref(tenant)
    actor_id, actor_name = _ref(actor)
    agent_id, agent_name = _ref(agent)
    approver_id, approver_name = _ref(approver)
    redacted_arguments, argument_kinds = redact(arguments) if arguments is not None else (None, [])
    redacted_payload, payload_kinds = redact(payload or {})
    redacted_verdict, verdict_kinds = redact(guardrail_verdict) if guardrail_verdict is not None else (None, [])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    micros = (occurred - epoch) // _MICROSECOND
    body = {
        "v": 1,
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
        "occurred_us": micros,
        "tenant_id": tenant_id,
        "tenant_name": tenant_name or None,
        "actor_id": actor_id,
        "actor_name": actor_name or None,
        "actor_roles": sorted(actor_roles),
        "agent_id": agent_id,
        "agent_name": agent_name or None,
        "conversation_id": _text(conversation_id),
        "turn_id": _text(turn_id),
        "tool": tool or None,
        "arguments": redacted_arguments,
        "decision": decision or None,
        "guardrail_verdict": redacted_verdict,
        "approval_status": approval_status or None,
        "approver_id": approver_id,
        "approver_name": approver_name or None,
        "outcome": outcome or None,
        "latency_ms": latency_ms,
        "model": model or None,
        "prompt_version": prompt_version,
        "cost": str(cost) if cost is not None else None,
        "sources": list(sources),
        "reason": reason or None,
        "payload": redacted_payload,
        "redacted": sorted(set(argument_kinds) | set(payload_kinds) | set(verdict_kinds)),
    }
    return canonical_json(body)


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


def record(event_type: str, **fields) -> None:
    """Record one audit event (see ``build_body`` for the fields).

    The event joins the caller's transaction: it is kept if and only if the caller
    commits, so an action and its record cannot part. Record a refusal *after* the refused
    transaction rolled back, or it is rolled back with it. Outside a transaction the
    event is in the chain when this returns.
    """
    body = build_body(event_type, **fields)
    PendingEvent.objects.create(body=body)
    # One chaining pass after commit covers every event of the transaction.
    if not any(callback[1] is chain_pending_quietly for callback in connection.run_on_commit):
        transaction.on_commit(chain_pending_quietly, robust=True)


# --- Exports ----------------------------------------------------------------------------


@dataclass
class PreparedExport:
    """An export bound to a snapshot of the chain: ``chunks`` streams the data file,
    ``manifest()`` (once the chunks are exhausted) gives the signed manifest."""

    fmt: str
    chunks: Iterator[bytes]
    manifest: Callable[[], dict]
    upto_seq: int


def prepare_export(*, user, queryset, filters: dict, fmt: str) -> PreparedExport:
    """Record the export, checkpoint the chain head, and set up the stream of every row
    of ``queryset`` up to that head (rows chained later are not in it)."""
    if fmt not in exports.FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}; use one of {', '.join(exports.FORMATS)}.")
    record(
        EventType.EXPORT_CREATED,
        actor=user,
        tenant=filters.get("tenant"),
        outcome="started",
        payload={"filters": filters, "format": fmt},
    )
    checkpoint = write_checkpoint()
    head = (checkpoint.seq, checkpoint.head_hash) if checkpoint else chain_head()
    digest = exports._Digesting()
    chunks = exports.data_chunks(export_rows(queryset, head[0]), fmt, digest)
    created_by = user.get_username() if user is not None else "(command line)"

    def manifest() -> dict:
        return exports.build_manifest(fmt=fmt, filters=filters, digest=digest, chain_head=head, created_by=created_by)

    return PreparedExport(fmt=fmt, chunks=chunks, manifest=manifest, upto_seq=head[0])
