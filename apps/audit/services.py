"""Writing the audit trail. ``record`` is the only writer (``from apps import audit;
audit.record(...)``); chain.py appends what it queues."""

import math
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection, transaction

from . import exports
from .canonical import canonical_json
from .chain import INSERT_PENDING, chain_head, chain_pending_quietly, change_and_chain, insert_and_chain
from .checkpoints import write_checkpoint
from .events import EventType
from .redaction import redact
from .selectors import export_rows, postgresql_csv_chunks

_EVENT_TYPE = re.compile(r"[a-z][a-z_]*(\.[a-z][a-z_]*)+")  # fullmatch: "$" would allow a trailing newline
_EVENT_TYPE_MAX = 64  # the event_type column's width
_LIMITS = {"tool": 100, "decision": 32, "reason": 100, "outcome": 32, "conversation_id": 64, "turn_id": 64}


def _ref(value) -> tuple[int | None, str]:
    """(id, name) of a model instance, or of an id given as is. Rows keep values, not
    foreign keys, so the record survives what it names being renamed or deleted."""
    if value is None:
        return None, ""
    if isinstance(value, int):
        return _id(value), ""
    name = getattr(value, "slug", None) or (value.get_username() if hasattr(value, "get_username") else str(value))
    return (None if value.pk is None else _id(value.pk)), name


def _id(pk) -> int:
    """An id the bigint search columns hold. Anything else (True, a UUID or text key, a
    number out of range) would fail the chainer's INSERT on PostgreSQL on every pass and
    block the chain, so it is refused here, before anything is written."""
    if isinstance(pk, bool) or not isinstance(pk, int) or not -(2**63) <= pk < 2**63:
        raise ValueError(f"Audit references need integer ids; got {pk!r}.")
    return pk


def _text(value) -> str | None:
    return None if value is None or value == "" else str(value)


# NUL and lone surrogates: Python's json writes them as \u0000 / \udXXX escapes, which
# PostgreSQL's jsonb refuses (and SQLite stores undecodable text). A body the database
# cannot parse would fail the chainer's INSERT on every pass and block the whole chain.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value):
    """``value`` with text the database cannot parse replaced by U+FFFD and non-finite
    floats (NaN, infinities: not JSON) written as text. For any record of outside input,
    not only audit bodies (the tool gateway's call rows)."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


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
    if not _EVENT_TYPE.fullmatch(event_type or "") or len(event_type) > _EVENT_TYPE_MAX:
        raise ValueError(
            f"Audit event type must be a dotted lower-case name such as 'tool.executed' of at most "
            f"{_EVENT_TYPE_MAX} characters, not {event_type!r}."
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
    # Absent means empty: leaving out empty fields keeps the bytes stored, hashed, verified
    # and exported about half as long.
    body = {key: value for key, value in body.items() if value is not None and value not in ("", [], {})}
    try:
        return canonical_json(storable(body))
    except TypeError as error:  # a value JSON cannot hold (a model instance, a file, ...)
        raise ValueError(str(error)) from error


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


def record(event_type: str, **fields) -> None:
    """Record one audit event (see ``build_body`` for the fields).

    The event joins the caller's transaction: it is kept if and only if the caller
    commits, so an action and its record cannot part. Record a refusal *after* the refused
    transaction rolled back, or it is rolled back with it. Outside a transaction the event
    is committed when this returns, and chained too unless another process holds the chain
    lock (then that process chains it, milliseconds later; see chain.py). Bad input raises
    ValueError and writes nothing.
    """
    body = build_body(event_type, **fields)
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        insert_and_chain(body, datetime.now(UTC))
        return
    _queue(body)


def _queue(body: str) -> None:
    """Queue an event in the caller's transaction, to be chained after it commits."""
    with connection.cursor() as cursor:
        cursor.execute(INSERT_PENDING, [body, datetime.now(UTC)])
    # One chaining pass after commit covers every event of the transaction.
    if not any(callback[1] is chain_pending_quietly for callback in connection.run_on_commit):
        transaction.on_commit(chain_pending_quietly, robust=True)


def change_and_record(statement: str, params, event_type: str, **fields) -> bool:
    """Run ``statement`` — one INSERT or UPDATE of at most one row, ending in RETURNING
    (raw SQL, ``%s`` placeholders, parameters prepared for the database) — and record the
    event that describes it, atomically: the event is kept if and only if the statement
    changed a row. Returns whether it did.

    For hot paths that write a row and its event on every call (the tool gateway): on
    PostgreSQL outside a transaction both go in one statement, one round trip and one
    commit; elsewhere in one transaction (inside a caller's, the event is queued in it, as
    ``record`` does). Bad event fields raise ValueError before anything is written."""
    body = build_body(event_type, **fields)
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        return change_and_chain(statement, params, body, datetime.now(UTC))
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            changed = bool(cursor.fetchall())
        if changed:
            _queue(body)
    return changed


# --- Exports ----------------------------------------------------------------------------


@dataclass
class PreparedExport:
    """An export bound to a snapshot of the chain: ``chunks`` streams the data file,
    ``manifest()`` (once the chunks are exhausted) gives the signed manifest."""

    fmt: str
    chunks: Iterator[bytes]
    manifest: Callable[[], dict]
    upto_seq: int


def prepare_export(*, user, queryset, filters: dict, fmt: str, tenant_ids: set[int] | None = None) -> PreparedExport:
    """Record the export, checkpoint the chain head, and set up the stream of every row
    of ``queryset`` up to that head (rows chained later are not in it).

    ``tenant_ids`` is the scope the caller restricted ``queryset`` to (None: every tenant).
    Each tenant in scope gets its own ``export.created`` event, so every tenant's compliance
    sees that its events were exported; the manifest names the scope.
    """
    if fmt not in exports.FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}; use one of {', '.join(exports.FORMATS)}.")
    if filters.get("tenant") is not None:
        scope: list[int] | None = [filters["tenant"]]
    else:
        scope = None if tenant_ids is None else sorted(tenant_ids)
    for tenant_id in scope if scope is not None else [None]:
        record(
            EventType.EXPORT_CREATED,
            actor=user,
            tenant=tenant_id,
            outcome="started",
            payload={"filters": filters, "format": fmt, "scope": scope if scope is not None else "all tenants"},
        )
    checkpoint = write_checkpoint()
    head = (checkpoint.seq, checkpoint.head_hash) if checkpoint else chain_head()
    digest = exports._Digesting()
    if fmt == "csv" and connection.vendor == "postgresql":
        chunks = postgresql_csv_chunks(queryset, head[0], digest)
    else:
        chunks = exports.data_chunks(export_rows(queryset, head[0], fmt), fmt, digest)
    created_by = user.get_username() if user is not None else "(command line)"

    def manifest() -> dict:
        return exports.build_manifest(
            fmt=fmt,
            filters=filters,
            scope=scope if scope is not None else "all tenants",
            digest=digest,
            chain_head=head,
            created_by=created_by,
        )

    return PreparedExport(fmt=fmt, chunks=chunks, manifest=manifest, upto_seq=head[0])
