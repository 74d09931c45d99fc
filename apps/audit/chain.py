"""Appending to the chain, and checking it.

Why the chain cannot fork or leave gaps under many concurrent writers
-----------------------------------------------------------------------
``audit.record`` never touches the chain: it inserts a PendingEvent in the caller's own
transaction (so the event commits or rolls back with the action it describes) and, once
that transaction has committed, calls ``chain_pending``. Appending is serialized by one
lock — a PostgreSQL advisory lock; on SQLite the write lock ``BEGIN IMMEDIATE`` takes —
and inside it the chainer reads the head (the highest seq), takes *every* pending event
committed so far (``DELETE ... RETURNING``), numbers them head+1, head+2, ..., hashes each
onto the previous one and inserts them, all in one transaction. Only the lock holder reads
the head, so two chainers never build on the same head (no fork); seq, the head and the
pending rows change in one transaction, so a failure rolls all three back (no gap, no event
lost or chained twice). The primary key on seq and the unique prev_hash and event_id back
this up in the database itself.

Group commit. Under load, one chaining transaction (one fsync) carries the events of every
writer that committed meanwhile, and the lock is never held through a caller's business
transaction. On PostgreSQL a writer that finds the lock taken does not wait: it leaves its
(committed) event to the holder, because every holder, after releasing the lock, looks for
pending events again and chains them if it finds any. A writer's event committed before its
failed attempt at the lock, the holder's look comes after its release, which came after that
attempt: so the holder (or whoever holds the lock by then) always sees it. Without
contention, ``record`` outside a transaction returns with its event chained; under
contention, a few milliseconds later. Events left by a process that died between its commit
and chaining are chained by the next writer, or by the periodic ``audit.chain_pending`` task.

Inside a caller's transaction (tests, or a caller that chains explicitly), the lock is the
transaction-level one, held until that transaction ends, so nobody builds on rows not yet
committed.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import DatabaseError, connection, transaction

from .canonical import GENESIS_HASH, chain_hash
from .models import GENERATED_COLUMNS, AuditEvent, PendingEvent

logger = logging.getLogger(__name__)

CHAIN_LOCK_ID = 0x61756469  # "audi": the advisory lock that serializes chaining
CHAIN_BATCH = 1000

_EVENTS = AuditEvent._meta.db_table
_PENDING = PendingEvent._meta.db_table
INSERT_PENDING = f"INSERT INTO {_PENDING} (body, recorded_at) VALUES (%s, %s)"  # noqa: S608


def _lock_chain(cursor) -> None:
    # Re-entrant: a session that holds the session-level lock gets this one at once.
    if connection.vendor == "postgresql":
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_ID])
    # SQLite: settings open every atomic block with BEGIN IMMEDIATE, which already holds the
    # database's single write lock.


def chain_head() -> tuple[int, str]:
    """(seq, row_hash) of the last chained event, or (0, genesis) for an empty chain."""
    row = AuditEvent.objects.order_by("-seq").values_list("seq", "row_hash").first()
    return row if row else (0, GENESIS_HASH)


def _append_pending(cursor) -> int:
    """Chain up to CHAIN_BATCH pending events. The caller's transaction holds the lock."""
    # Both databases support DELETE ... RETURNING (SQLite since 3.35).
    cursor.execute(
        f"DELETE FROM {_PENDING} WHERE id IN (SELECT id FROM {_PENDING} ORDER BY id LIMIT %s) RETURNING id, body",  # noqa: S608 — table names are ours
        [CHAIN_BATCH],
    )
    pending = sorted(cursor.fetchall())
    if not pending:
        return 0
    cursor.execute(f"SELECT seq, row_hash FROM {_EVENTS} ORDER BY seq DESC LIMIT 1")  # noqa: S608
    seq, prev_hash = cursor.fetchone() or (0, GENESIS_HASH)
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


def _chain_batch() -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        _lock_chain(cursor)
        return _append_pending(cursor)


def insert_and_chain(body: str, recorded_at) -> None:
    """``record`` outside any transaction, on PostgreSQL: insert the event and, if the chain
    lock is free, chain it in the same transaction — one commit (one fsync) per event when
    writers do not contend. If the lock is taken, the event commits as pending and the
    holder chains it (see the module docstring); a failure while chaining still keeps the
    event, as pending."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(INSERT_PENDING, [body, recorded_at])
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [CHAIN_LOCK_ID])
            chained_here = cursor.fetchone()[0]
            if chained_here:
                _append_pending(cursor)
    except DatabaseError:
        logger.exception("Chaining an audit event failed; it is kept as pending for the sweep.")
        with connection.cursor() as cursor:
            cursor.execute(INSERT_PENDING, [body, recorded_at])
        return
    # Either way, look again now that this commit is visible: as the lock's releaser (events
    # other writers left while it was held) or as a writer that found it taken (the holder
    # may have looked before this commit).
    if not chained_here or PendingEvent.objects.exists():
        chain_pending_quietly()


def _drain() -> int:
    total = 0
    while True:
        chained = _chain_batch()
        total += chained
        if chained < CHAIN_BATCH:
            return total


def chain_pending(*, wait: bool = False) -> int:
    """Append committed pending events to the chain; returns how many this call appended.

    On PostgreSQL outside a transaction, returns at once if another process holds the chain
    lock (it will chain what is pending, see above) unless ``wait`` is set.
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return _drain()
    total = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_lock(%s), true" if wait else "SELECT pg_try_advisory_lock(%s)", [CHAIN_LOCK_ID]
            )
            acquired = cursor.fetchone()[-1]
        if not acquired:
            return total
        try:
            total += _drain()
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [CHAIN_LOCK_ID])
        if not PendingEvent.objects.exists():
            return total
        wait = False


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
    # seq starts at 1: "--since 0" means the whole chain, not a gap before seq 1.
    start = 1 if since is None else max(1, _first_seq_at_or_after(since))
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
        if prev is None:
            return _broken(
                result, seq - 1, f"gap: seq {seq - 1}, the row before seq {seq}, is missing (events deleted)"
            )
        if prev_hash != prev:
            return _broken_link(result, seq, prev_hash, row_hash, body)
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


def _broken_link(result: VerifyResult, seq: int, prev_hash: str, row_hash: str, body: str) -> VerifyResult:
    """Say why row ``seq`` does not link to the row before it."""
    linked = AuditEvent.objects.filter(row_hash=prev_hash).values_list("seq", flat=True).first()
    if linked is not None and linked > seq:
        return _broken(result, seq, f"reordered: seq {seq} was chained after seq {linked} (rows swapped or renumbered)")
    if linked is not None:
        return _broken(result, seq, f"seq {seq} links to seq {linked}, not seq {seq - 1} (rows deleted and renumbered)")
    if chain_hash(prev_hash, seq, body) != row_hash:
        # Not hashed at this seq either: this row itself was changed (renumbered after a
        # deletion, or its prev_hash edited), not the row before it.
        return _broken(
            result, seq, f"seq {seq} does not link to seq {seq - 1} nor match its own hash (renumbered or edited)"
        )
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
