"""What the audit pages, exports and reports read."""

import json
from collections import Counter, defaultdict
from statistics import median

from django.db import connection, models

from .access import tenant_ids, tenant_names
from .forms import day_bounds
from .models import AuditEvent, PendingEvent

PAGE_SIZE = 50
LIST_COLUMNS = (
    "seq",
    "occurred_at",
    "event_type",
    "tenant_id",
    "actor_name",
    "agent_id",
    "turn_id",
    "tool",
    "decision",
    "reason",
    "outcome",
    "approver_name",
)


def visible_events(user, permission: str = "audit.view_auditevent"):
    """Events of the tenants where ``user`` holds ``permission`` (superusers: all)."""
    allowed = tenant_ids(user, permission)
    if allowed is not None and not allowed:
        return AuditEvent.objects.none()
    return AuditEvent.objects.for_tenants(allowed)


def filter_events(queryset, filters: dict):
    """Apply the (validated) filters of AuditFilterForm.filters()."""
    start, end = day_bounds(filters.get("date_from"), filters.get("date_to"))
    if start:
        queryset = queryset.filter(occurred_at__gte=start)
    if end:
        queryset = queryset.filter(occurred_at__lt=end)
    exact = {
        "tenant": "tenant_id",
        "event_type": "event_type",
        "agent": "agent_id",
        "actor": "actor_name",
        "tool": "tool",
        "decision": "decision",
        "approver": "approver_name",
        "turn": "turn_id",
    }
    for name, column in exact.items():
        if filters.get(name) not in (None, ""):
            queryset = queryset.filter(**{column: filters[name]})
    return queryset


def page_of_events(queryset, *, before: int | None = None, size: int = PAGE_SIZE):
    """One page, newest first, by keyset on seq (no COUNT over millions of rows, constant
    cost however deep the page): the rows and the seq to continue before, if any."""
    if before is not None:
        queryset = queryset.filter(seq__lt=before)
    rows = list(queryset.order_by("-seq").only(*LIST_COLUMNS, "body")[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return rows, (rows[-1].seq if more and rows else None)


def pending_count() -> int:
    return PendingEvent.objects.count()


def turn_story(user, turn_id: str) -> list[AuditEvent]:
    """Every event of one turn, in the order it happened."""
    return list(visible_events(user).filter(turn_id=turn_id).order_by("seq"))


def export_rows(queryset, upto_seq: int, fmt: str = "csv"):
    """Rows for an export, oldest first, streamed: ``CSV_COLUMNS`` for CSV; for JSONL only
    what a line holds (seq, prev_hash, row_hash, body)."""
    from .exports import CSV_COLUMNS

    columns = CSV_COLUMNS if fmt == "csv" else ("seq", "prev_hash", "row_hash", "body")
    return queryset.filter(seq__lte=upto_seq).order_by("seq").values_list(*columns).iterator(chunk_size=5000)


# Text columns a spreadsheet could run as a formula; the body always starts with "{".
_ESCAPED_COLUMNS = (
    "event_type",
    "actor_name",
    "conversation_id",
    "turn_id",
    "tool",
    "decision",
    "reason",
    "outcome",
    "approver_name",
)


def postgresql_csv_chunks(queryset, upto_seq: int, digest, chunk_bytes: int = 1 << 20):
    """The CSV data file written by PostgreSQL itself (``COPY ... TO STDOUT (FORMAT CSV)``):
    the same columns, quoting and formula escaping as exports.data_chunks, several times
    faster than Python's csv module for a million rows (bench/audit.py). Fills ``digest``
    (count, first/last seq and hashes) from one aggregate query over the same rows."""
    from django.db.models import Case, Count, F, Max, Min, Value, When
    from django.db.models.functions import Concat

    from .exports import CSV_COLUMNS

    rows = queryset.filter(seq__lte=upto_seq)
    summary = rows.aggregate(count=Count("seq"), first=Min("seq"), last=Max("seq"))
    if summary["count"]:
        ends = {
            seq: (prev_hash, row_hash)
            for seq, prev_hash, row_hash in AuditEvent.objects.filter(
                seq__in=[summary["first"], summary["last"]]
            ).values_list("seq", "prev_hash", "row_hash")
        }
        digest.count = summary["count"]
        digest.first = (summary["first"], *ends[summary["first"]])
        digest.last = (summary["last"], ends[summary["last"]][1])
        digest.contiguous = summary["count"] == summary["last"] - summary["first"] + 1
    escaped = {
        f"csv_{name}": Case(
            When(**{f"{name}__regex": r"^[=+@\t\r'-]"}, then=Concat(Value("'"), F(name))),
            default=F(name),
        )
        for name in _ESCAPED_COLUMNS
    }
    selected = [f"csv_{name}" if name in _ESCAPED_COLUMNS else name for name in CSV_COLUMNS]
    selected[CSV_COLUMNS.index("occurred_at")] = "csv_occurred_at"
    query = (
        rows.annotate(**escaped, csv_occurred_at=_IsoTimestamp("occurred_at"))
        .order_by("seq")
        .values_list(*selected)
        .query
    )
    sql, params = query.get_compiler(queryset.db).as_sql()
    header = (",".join(CSV_COLUMNS) + "\n").encode()
    digest.sha256.update(header)
    buffer = [header]
    size = len(header)
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT CSV)", params) as copy:
        for block in copy:
            digest.sha256.update(block)
            buffer.append(bytes(block))
            size += len(block)
            if size >= chunk_bytes:
                yield b"".join(buffer)
                buffer, size = [], 0
    yield b"".join(buffer)


class _IsoTimestamp(models.Func):
    """A timestamp as ISO 8601 text in UTC, the way Python's isoformat() writes it."""

    output_field = models.TextField()

    def as_postgresql(self, compiler, connection, **extra_context):
        column, params = compiler.compile(self.source_expressions[0])
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')", params


# --- Reports ----------------------------------------------------------------------------


def _bodies(queryset):
    """The parsed bodies of ``queryset`` (ordered by the caller), streamed."""
    for body in queryset.values_list("body", flat=True).iterator(chunk_size=2000):
        yield json.loads(body)


REPORT_ROW_LIMIT = 500


def refunds_report(queryset, limit: int = REPORT_ROW_LIMIT) -> tuple[list[dict], int]:
    """Refunds executed, oldest first: who asked (the acting user), who approved it, the
    amount. At most ``limit`` rows (the export has them all) and the total count."""
    refunds = queryset.filter(event_type="tool.executed", tool__startswith="refund")
    rows = []
    for event in _bodies(refunds.order_by("seq")[:limit]):
        arguments = event.get("arguments") or {}
        rows.append(
            {
                "occurred_at": event["occurred_at"],
                "tenant": event.get("tenant_name") or event.get("tenant_id"),
                "agent": event.get("agent_name") or event.get("agent_id"),
                "turn_id": event.get("turn_id"),
                "tool": event.get("tool"),
                "amount": arguments.get("amount") if isinstance(arguments, dict) else None,
                "requested_by": event.get("actor_name"),
                "approved_by": event.get("approver_name"),
                "outcome": event.get("outcome"),
            }
        )
    total = len(rows) if len(rows) < limit else refunds.count()
    return rows, total


def escalations_report(queryset) -> list[tuple[str, int]]:
    """Handoffs and escalations by reason code, most frequent first."""
    counts = Counter(
        queryset.filter(event_type="handoff.created").values_list("reason", flat=True).iterator(chunk_size=5000)
    )
    return [(reason or "(no reason code)", count) for reason, count in counts.most_common()]


def guardrail_kills_report(queryset) -> list[tuple[str, int]]:
    """Guardrail kill verdicts by the rule that fired."""
    counts = Counter(
        queryset.filter(event_type="guardrail.verdict", decision="kill")
        .values_list("reason", flat=True)
        .iterator(chunk_size=5000)
    )
    return [(rule or "(no rule)", count) for rule, count in counts.most_common()]


def approval_times_report(queryset) -> list[dict]:
    """Approval decisions per tool: how many, approved vs rejected, median and slowest
    time to decide (latency_ms of approval.decided is the wait since the request)."""
    per_tool: dict[str, dict] = defaultdict(lambda: {"approved": 0, "rejected": 0, "other": 0, "waits": []})
    for event in _bodies(queryset.filter(event_type="approval.decided").order_by("seq")):
        entry = per_tool[event.get("tool") or "(no tool)"]
        status = event.get("approval_status") or event.get("decision")
        entry[status if status in ("approved", "rejected") else "other"] += 1
        if event.get("latency_ms") is not None:
            entry["waits"].append(event["latency_ms"] / 60000)
    return [
        {
            "tool": tool,
            "decisions": entry["approved"] + entry["rejected"] + entry["other"],
            "approved": entry["approved"],
            "rejected": entry["rejected"],
            "median_minutes": round(median(entry["waits"]), 1) if entry["waits"] else None,
            "max_minutes": round(max(entry["waits"]), 1) if entry["waits"] else None,
        }
        for tool, entry in sorted(per_tool.items())
    ]


# --- What the pages show around the rows ------------------------------------------------


def last_verification() -> AuditEvent | None:
    """The latest chain verification (``audit.verified``, recorded by the periodic task
    without a tenant). Read whoever asks: the pages show only its outcome and time."""
    return (
        AuditEvent.objects.filter(event_type="audit.verified")
        .order_by("-seq")
        .only("seq", "occurred_at", "outcome")
        .first()
    )


def tenant_ids_in_trail() -> set[int]:
    """The distinct tenant ids in the trail, by a loose index scan on (tenant_id, seq): one
    index probe per tenant, however many millions of rows (a plain DISTINCT reads them all)."""
    table = AuditEvent._meta.db_table
    query = (
        "WITH RECURSIVE tenants(id) AS ("  # noqa: S608 — the table name is ours
        f"SELECT MIN(tenant_id) FROM {table} UNION ALL "
        f"SELECT (SELECT MIN(tenant_id) FROM {table} WHERE tenant_id > tenants.id) FROM tenants "
        "WHERE tenants.id IS NOT NULL) SELECT id FROM tenants WHERE id IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(query)
        return {row[0] for row in cursor.fetchall()}


def tenant_choices(allowed: set[int] | None) -> dict[int, str]:
    """Names of the tenants a filter may name: ``allowed`` (None, for superusers: every
    tenant the trail mentions; one whose name is gone reads as its id)."""
    ids = tenant_ids_in_trail() if allowed is None else set(allowed)
    names = tenant_names(ids) if ids else {}
    return {tenant_id: names.get(tenant_id) or f"Tenant {tenant_id}" for tenant_id in ids}
