"""Appending to the chain, and checking it.

Why the chain cannot fork or leave gaps under many concurrent writers
-----------------------------------------------------------------------
``audit.record`` never touches the chain: it inserts a PendingEvent in the caller's own
transaction (so the event commits or rolls back with the action it describes) and, once
that transaction has committed, calls ``chain_pending``. Chaining is serialized by one
lock — ``pg_advisory_xact_lock`` on PostgreSQL; on SQLite the write lock that
``BEGIN IMMEDIATE`` takes — and inside it the chainer reads the head (the highest seq),
takes *every* pending event committed so far (``DELETE ... RETURNING``), numbers them
head+1, head+2, ... , hashes each onto the previous one and inserts them, all in one
transaction. Only the lock holder can read the head, so two chainers never build on the
same head (no fork); seq, the head and the pending rows change in one transaction, so a
failure rolls all three back (no gap, no event lost or chained twice). The primary key on
seq and the unique prev_hash and event_id back this up in the database itself.

This is group commit: whoever holds the lock chains the events of every writer that
committed meanwhile, so under load one chaining transaction (and one fsync) carries many
events, and the lock is never held through any caller's business transaction. A writer that
finds the lock taken waits for it and then chains whatever is left, so by the time
``record`` returns outside a transaction, its event is in the chain.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connection, transaction

from .canonical import GENESIS_HASH, chain_hash
from .models import GENERATED_COLUMNS, AuditEvent, PendingEvent

logger = logging.getLogger(__name__)

CHAIN_LOCK_ID = 0x61756469  # "audi": the advisory lock that serializes chaining
CHAIN_BATCH = 1000

_EVENTS = AuditEvent._meta.db_table
_PENDING = PendingEvent._meta.db_table


def _lock_chain(cursor) -> None:
    if connection.vendor == "postgresql":
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_ID])
    # SQLite: settings open every atomic block with BEGIN IMMEDIATE, which already holds the
    # database's single write lock.


def chain_head(cursor=None) -> tuple[int, str]:
    """(seq, row_hash) of the last chained event, or (0, genesis) for an empty chain."""
    row = AuditEvent.objects.order_by("-seq").values_list("seq", "row_hash").first()
    return row if row else (0, GENESIS_HASH)


def _chain_batch() -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        _lock_chain(cursor)
        # Both databases support DELETE ... RETURNING (SQLite since 3.35).
        cursor.execute(
            f"DELETE FROM {_PENDING} WHERE id IN (SELECT id FROM {_PENDING} ORDER BY id LIMIT %s) RETURNING id, body",  # noqa: S608 — table names are ours
            [CHAIN_BATCH],
        )
        pending = sorted(cursor.fetchall())
        if not pending:
            return 0
        seq, prev_hash = chain_head()
        seqs, prev_hashes, row_hashes, bodies = [], [], [], []
        for _pending_id, body in pending:
            seq += 1
            row_hash = chain_hash(prev_hash, seq, body)
            seqs.append(seq)
            prev_hashes.append(prev_hash)
            row_hashes.append(row_hash)
            bodies.append(body)
            prev_hash = row_hash
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {_EVENTS} (seq, prev_hash, row_hash, body) "  # noqa: S608
                "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[])",
                [seqs, prev_hashes, row_hashes, bodies],
            )
        else:
            cursor.executemany(
                f"INSERT INTO {_EVENTS} (seq, prev_hash, row_hash, body) VALUES (%s, %s, %s, %s)",  # noqa: S608
                list(zip(seqs, prev_hashes, row_hashes, bodies, strict=True)),
            )
        return len(pending)


def chain_pending() -> int:
    """Append every committed pending event to the chain; returns how many."""
    total = 0
    while True:
        chained = _chain_batch()
        total += chained
        if chained < CHAIN_BATCH:
            return total


def chain_pending_quietly() -> None:
    """After-commit hook of ``record``: a failure here must not fail the caller's request
    (its action did commit); the event stays pending and the periodic sweep chains it."""
    try:
        chain_pending()
    except Exception:
        logger.exception("Chaining audit events failed; they stay pending for the sweep.")


# --- Verification -----------------------------------------------------------------------


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    broken_seq: int | None = None
    problem: str = ""
    pending: int = 0
    checkpoints_checked: int = 0

    def summary(self) -> str:
        if self.ok:
            span = f" (seq {self.first_seq}..{self.last_seq})" if self.checked else ""
            text = f"OK: {self.checked} events verified{span}"
            if self.checkpoints_checked:
                text += f", consistent with {self.checkpoints_checked} signed checkpoint(s)"
            if self.pending:
                text += f"; {self.pending} event(s) still waiting to be chained"
            return text + "."
        return f"BROKEN at seq {self.broken_seq}: {self.problem}"


def _rows(since_seq: int) -> Iterator[tuple[int, str, str, str]]:
    """Stream (seq, prev_hash, row_hash, body) in seq order with flat memory."""
    query = f"SELECT seq, prev_hash, row_hash, body FROM {_EVENTS} WHERE seq >= %s ORDER BY seq"  # noqa: S608
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(query, [since_seq])
        while True:
            rows = cursor.fetchmany(5000)
            if not rows:
                return
            yield from rows


def _columns_still_generated() -> list[str]:
    """Search columns that are no longer generated from the body (someone altered the table
    to write them independently)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                "AND NOT attisdropped AND attgenerated = 's'",
                [_EVENTS],
            )
            generated = {row[0] for row in cursor.fetchall()}
        elif connection.vendor == "sqlite":
            cursor.execute(f"PRAGMA table_xinfo({_EVENTS})")
            generated = {row[1] for row in cursor.fetchall() if row[6] in (2, 3)}
        else:
            return []
    return [column for column in GENERATED_COLUMNS if column not in generated]


def _first_seq_at_or_after(since) -> int:
    """The first seq of events on or after ``since`` (a datetime or a seq number)."""
    if isinstance(since, int):
        return since
    first = AuditEvent.objects.filter(occurred_at__gte=since).order_by("seq").values_list("seq", flat=True).first()
    return first if first is not None else chain_head()[0] + 1


def verify_chain(*, since=None, checkpoints=None) -> VerifyResult:
    """Walk the chain from ``since`` (a seq or a datetime; default the start) and report OK
    with the count, or the first broken seq and why.

    Each row must hash to its row_hash, link to the previous row's hash, and follow it by
    exactly one seq. ``checkpoints`` (signed (seq, head hash) pairs written outside the
    database) must match the chain where they fall, which catches an attacker who edited a
    row and re-hashed everything after it.
    """
    altered = _columns_still_generated()
    if altered:
        return VerifyResult(
            False,
            0,
            broken_seq=None,
            problem=f"schema altered: column(s) {', '.join(altered)} are no longer generated from the hashed body.",
        )
    start = 1 if since is None else _first_seq_at_or_after(since)
    checkpoint_hashes = {point.seq: point for point in (checkpoints or [])}
    result = VerifyResult(True, 0, pending=PendingEvent.objects.count())
    expected_seq = start
    if start <= 1:
        prev = GENESIS_HASH
    else:
        previous = AuditEvent.objects.filter(seq=start - 1).values_list("row_hash", flat=True).first()
        prev = previous  # None when the row before was deleted: reported on the first row
    for seq, prev_hash, row_hash, body in _rows(start):
        if seq != expected_seq:
            problem = (
                f"gap: expected seq {expected_seq}, found {seq} (events deleted)"
                if seq > expected_seq
                else f"reordered: seq {seq} after {expected_seq - 1}"
            )
            return _broken(result, expected_seq, problem)
        if prev is not None and prev_hash != prev:
            return _broken_link(result, seq, prev_hash)
        if chain_hash(prev_hash, seq, body) != row_hash:
            return _broken(result, seq, "row_hash does not match its content (edited)")
        point = checkpoint_hashes.get(seq)
        if point is not None:
            if point.head_hash != row_hash:
                return _broken(
                    result,
                    seq,
                    f"differs from the signed checkpoint of {point.created_at}: the chain was re-hashed from here "
                    "or earlier",
                )
            result.checkpoints_checked += 1
        if result.first_seq is None:
            result.first_seq = seq
        result.checked += 1
        prev = row_hash
        expected_seq = seq + 1
    result.last_seq = expected_seq - 1 if result.checked else None
    result.last_hash = prev if result.checked else None
    beyond = [point for seq, point in checkpoint_hashes.items() if seq >= expected_seq]
    if beyond:
        latest = max(beyond, key=lambda point: point.seq)
        return _broken(
            result,
            expected_seq,
            f"the chain ends at seq {expected_seq - 1} but a signed checkpoint of {latest.created_at} records seq "
            f"{latest.seq}: events at the end were deleted",
        )
    return result


def _broken_link(result: VerifyResult, seq: int, prev_hash: str) -> VerifyResult:
    """Say why row ``seq`` does not link to the row before it."""
    linked = AuditEvent.objects.filter(row_hash=prev_hash).values_list("seq", flat=True).first()
    if linked is not None and linked > seq:
        return _broken(result, seq, f"reordered: seq {seq} was chained after seq {linked} (rows swapped or renumbered)")
    if linked is not None:
        return _broken(result, seq, f"seq {seq} links to seq {linked}, not seq {seq - 1} (rows deleted and renumbered)")
    before = AuditEvent.objects.filter(seq=seq - 1).values_list("prev_hash", "row_hash", "body").first()
    if before is not None and chain_hash(before[0], seq - 1, before[2]) == before[1]:
        return _broken(
            result,
            seq - 1,
            f"edited and re-hashed: seq {seq} still links to the original content of seq {seq - 1}",
        )
    return _broken(result, seq, "prev_hash does not match the previous row's hash (edited)")


def _broken(result: VerifyResult, seq: int, problem: str) -> VerifyResult:
    result.ok = False
    result.broken_seq = seq
    result.problem = problem
    return result
