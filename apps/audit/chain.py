"""Appending to the chain, and checking it.

Why the chain cannot fork or leave gaps under many concurrent writers
-----------------------------------------------------------------------
Appending is serialized by one lock — a PostgreSQL advisory lock (CHAIN_LOCK_ID); on
SQLite the write lock ``BEGIN IMMEDIATE`` takes. Inside it the appender reads the head (the
highest seq), takes every pending event committed so far (``DELETE ... RETURNING``), numbers
them head+1, head+2, ..., hashes each onto the previous one and inserts them, all in one
transaction. Only the lock holder reads the head, so two appenders never build on the same
head (no fork); seq, the head and the queue change in one transaction, so a failure rolls
all three back (no gap, no event lost or chained twice). The primary key on seq and the
unique prev_hash and event_id back this up in the database itself.

Where events come from:

- ``audit.record`` inside a caller's transaction queues a PendingEvent in that transaction
  (so the event commits or rolls back with the action it describes) and, after the commit,
  calls ``chain_pending``. The lock is never held through a caller's business transaction.
- ``audit.record`` outside a transaction on PostgreSQL calls the database function
  ``audit_append`` (migration audit/0003): one round trip that, if the lock is free,
  appends the queued events and this one in its own transaction, or else queues this one.

Group commit, and why nothing is left behind. Under load, one appending transaction (one
fsync) carries the events of every writer that queued meanwhile. A writer that finds the
lock taken does not wait: it leaves its committed event to the holder, because every
holder, after its commit, looks for pending events again (without the lock) and appends
them if it finds any. The waiting writer's event committed before its failed attempt at the
lock; the holder's look comes after its commit, which came after that attempt: so the
holder (or whoever holds the lock by then, who will look in turn) always sees it. Without
contention, ``record`` returns with its event chained; under contention, milliseconds
later. Events left by a process that died between its commit and the look are appended by
the next writer, or by the periodic ``audit.chain_pending`` task.

Inside a caller's transaction (tests, or a caller that chains explicitly), the lock is the
transaction-level one, held until that transaction ends, so nobody builds on rows not yet
committed.

Checking (``verify_chain``) is independent of how rows were written: it recomputes every
hash in Python from the stored bytes.
"""

import hashlib
import logging
import multiprocessing
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass

import psycopg
from django.db import connection, connections, transaction

from . import driver
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


def _append_pending(cursor, own_bodies: tuple[str, ...] = ()) -> int:
    """Chain up to CHAIN_BATCH pending events, then ``own_bodies`` (events of the caller's
    transaction that skip the queue). The caller's transaction holds the lock. Returns how
    many pending events were taken."""
    take = f"DELETE FROM {_PENDING} WHERE id IN (SELECT id FROM {_PENDING} ORDER BY id LIMIT %s) RETURNING id, body"  # noqa: S608 — table names are ours
    last = f"SELECT seq, row_hash FROM {_EVENTS} ORDER BY seq DESC LIMIT 1"  # noqa: S608
    if connection.vendor == "postgresql":
        # One round trip: the pending events and the head (as a row with id -seq).
        cursor.execute(
            f"WITH taken AS ({take}) SELECT id, body FROM taken UNION ALL SELECT -seq, row_hash FROM ({last}) head",  # noqa: S608
            [CHAIN_BATCH],
        )
        rows = cursor.fetchall()
        pending = sorted(row for row in rows if row[0] > 0)
        head = next(((-row[0], row[1]) for row in rows if row[0] <= 0), None)
    else:  # SQLite (3.35+ has DELETE ... RETURNING, but no data-modifying WITH)
        cursor.execute(take, [CHAIN_BATCH])
        pending = sorted(cursor.fetchall())
        cursor.execute(last)
        head = cursor.fetchone()
    if not pending and not own_bodies:
        return 0
    seq, prev_hash = head or (0, GENESIS_HASH)
    seqs, prev_hashes, row_hashes, bodies = [], [], [], []
    for body in [body for _pending_id, body in pending] + list(own_bodies):
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
    """``record`` outside any transaction, on PostgreSQL, in (usually) two round trips.

    ``audit_append`` (a database function, migration audit/0003) either appends the event
    to the chain — after any pending ones — in its own one-statement transaction, if the
    chain lock is free, or queues it as pending if another process holds the lock. Then, as
    the module docstring requires, this process looks again after its commit: as the lock's
    releaser (events other writers queued while it held it) or as a writer that found it
    taken (the holder may have looked before this commit). A failure keeps the event, as
    pending, for the sweep.
    """
    # Straight on the driver, as prepared statements: this runs for every event.
    cursor = driver.cursor()
    try:
        taken = cursor.execute(_APPEND, [body, recorded_at, CHAIN_BATCH], prepare=True).fetchone()[0]
    except psycopg.Error:
        logger.exception("Chaining an audit event failed; it is kept as pending for the sweep.")
        with connection.cursor() as fallback:
            fallback.execute(INSERT_PENDING, [body, recorded_at])
        return
    try:
        _after_append(cursor, taken)
    finally:
        cursor.close()


def change_and_chain(statement: str, params, body: str, recorded_at) -> bool:
    """``statement`` — an INSERT or UPDATE of at most one row, ending in RETURNING — and the
    append of ``body``, as one statement: one round trip, one transaction, so the change and
    its event commit together or not at all. The event is appended only if the statement
    changed a row; returns whether it did. On PostgreSQL outside a transaction only (the
    caller checks); then the same look again as ``insert_and_chain``."""
    cursor = driver.cursor()
    try:
        with connection.wrap_database_errors:
            rows = cursor.execute(
                f"WITH action AS ({statement}) {_APPEND} FROM action",
                [*params, body, recorded_at, CHAIN_BATCH],
                prepare=True,
            ).fetchall()
        if rows:
            _after_append(cursor, rows[0][0])
        return bool(rows)
    finally:
        cursor.close()


def _after_append(cursor, taken: int) -> None:
    """The event is committed (chained or pending): a failure from here on only delays it."""
    try:
        if taken == -1 and cursor.execute(_APPEND, [None, None, CHAIN_BATCH], prepare=True).fetchone()[0] == -1:
            return  # the holder looks again after its commit, and sees this event
        _look_again(cursor)
    except psycopg.Error:
        logger.exception("Chaining audit events failed; they stay pending for the sweep.")


_APPEND = "SELECT audit_append(%s::text, %s::timestamptz, %s::integer)"
_ANY_PENDING = f"SELECT EXISTS (SELECT 1 FROM {_PENDING})"  # noqa: S608


def _look_again(cursor) -> None:
    """After a commit that held the lock: append what is pending until a look finds nothing
    (no writer queued an event while the lock was held) or finds the lock taken (its holder
    will look after its own commit)."""
    while cursor.execute(_ANY_PENDING, prepare=True).fetchone()[0]:
        if cursor.execute(_APPEND, [None, None, CHAIN_BATCH], prepare=True).fetchone()[0] == -1:
            return


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


def _rows(since_seq: int, until_seq: int | None = None) -> Iterator[tuple[int, bytes, bytes, bytes]]:
    """Stream (seq, prev_hash, row_hash, body) in seq order, as bytes, with flat memory.

    On PostgreSQL through ``COPY ... TO STDOUT (FORMAT BINARY)`` with the text columns read
    as raw bytes: the fastest way out of the database, and no decoding of bodies that are
    only hashed (measured in bench/audit.py).
    """
    query = f"SELECT seq, prev_hash, row_hash, body FROM {_EVENTS} WHERE seq >= %s AND seq <= %s ORDER BY seq"  # noqa: S608
    bounds = [since_seq, until_seq if until_seq is not None else 2**63 - 1]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            raw = cursor.cursor
            with raw.copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)", bounds) as copy:
                copy.set_types(["int8", "bytea", "bytea", "bytea"])
                rows = copy.rows()
                try:
                    yield from rows
                finally:
                    # Stopped early (a broken row): read the COPY to its end, or the
                    # connection stays busy and the next query waits forever.
                    for _row in rows:
                        pass
        return
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(query, bounds)
        while rows := cursor.fetchmany(5000):
            for seq, prev_hash, row_hash, body in rows:
                yield seq, prev_hash.encode(), row_hash.encode(), body.encode()


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


PARALLEL_MIN_ROWS = 100_000  # below this, starting processes costs more than it saves


def verify_chain(*, since=None, checkpoints=None, workers: int = 1) -> VerifyResult:
    """Walk the chain from ``since`` (a seq or a datetime; default the start) and report OK
    with the count, or the first broken seq and why.

    Each row must hash to its row_hash, link to the previous row's hash, and follow it by
    exactly one seq. ``checkpoints`` (signed (seq, head hash) pairs written outside the
    database) must match the chain where they fall, which catches an attacker who edited a
    row and re-hashed everything after it.

    ``workers`` > 1 (PostgreSQL, outside a transaction, long chains) splits the chain into
    consecutive ranges verified by that many processes at once. Each range starts from the
    stored hash of the row before it, which the range before verified, so the ranges
    together check every row and every link exactly as one walk would.
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
    head = chain_head()[0]
    ranges = _ranges(start, head, workers)
    if len(ranges) > 1:
        outcomes = _verify_ranges_in_processes(ranges, checkpoint_hashes)
    else:
        outcomes = [_verify_range(start, None, checkpoint_hashes)]
    for (checked, first_seq, last_seq, last_hash, checkpoints_checked), problem, broken_link in outcomes:
        result.checked += checked
        result.checkpoints_checked += checkpoints_checked
        result.first_seq = result.first_seq or first_seq
        result.last_seq, result.last_hash = (last_seq, last_hash) if checked else (result.last_seq, result.last_hash)
        if broken_link is not None:
            return _broken_link(result, *broken_link)
        if problem is not None:
            return _broken(result, *problem)
    expected_seq = (result.last_seq or start - 1) + 1
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


def _ranges(start: int, head: int, workers: int) -> list[tuple[int, int | None]]:
    if workers <= 1 or connection.vendor != "postgresql" or connection.in_atomic_block:
        return [(start, None)]
    total = head - start + 1
    if total < PARALLEL_MIN_ROWS:
        return [(start, None)]
    size = -(-total // workers)
    bounds = [(low, min(low + size - 1, head)) for low in range(start, head + 1, size)]
    return [*bounds[:-1], (bounds[-1][0], None)]  # the last range runs to the end, however long


def _verify_range(start: int, end: int | None, checkpoint_hashes: dict):
    """Verify seq ``start``..``end`` (None: to the end): ((checked, first, last, last_hash,
    checkpoints_checked), problem, broken_link), plain values a process can hand back."""
    if start <= 1:
        prev: bytes | None = GENESIS_HASH.encode()
    else:
        previous = AuditEvent.objects.filter(seq=start - 1).values_list("row_hash", flat=True).first()
        prev = previous.encode() if previous else None  # None: the row before was deleted
    partial = VerifyResult(True, 0)
    # Close the stream before any further query (explaining a broken link reads other rows).
    with closing(_rows(start, end)) as rows:
        problem, broken_link = _walk(rows, start, prev, checkpoint_hashes, partial)
    summary = (partial.checked, partial.first_seq, partial.last_seq, partial.last_hash, partial.checkpoints_checked)
    return summary, problem, broken_link


def _verify_range_in_child(arguments):
    try:
        return _verify_range(*arguments)
    finally:
        connections.close_all()


def _verify_ranges_in_processes(ranges, checkpoint_hashes):
    # Children must open their own connections, never share the parent's socket.
    connections.close_all()
    context = multiprocessing.get_context("fork")
    with context.Pool(len(ranges)) as pool:
        return pool.map(_verify_range_in_child, [(low, high, checkpoint_hashes) for low, high in ranges])


def _walk(rows, start: int, prev: bytes | None, checkpoint_hashes: dict, result: VerifyResult):
    """The hot loop of verify_chain: bytes throughout, locals only (it runs a million
    times). Returns (problem, broken_link): (seq, why) for the first broken row, or the
    arguments for _broken_link; both None when every row holds. Fills in ``result``."""
    sha256 = hashlib.sha256
    checked, expected_seq = 0, start
    for seq, prev_hash, row_hash, body in rows:
        problem = None
        if seq != expected_seq:
            problem = (
                expected_seq,
                f"gap: expected seq {expected_seq}, found {seq} (events deleted)"
                if seq > expected_seq
                else f"reordered: seq {seq} after {expected_seq - 1}",
            )
        elif prev is None:
            problem = (seq - 1, f"gap: seq {seq - 1}, the row before seq {seq}, is missing (events deleted)")
        elif prev_hash != prev:
            result.checked = checked
            return None, (seq, prev_hash.decode(), row_hash.decode(), body.decode())
        elif sha256(b"%s\n%d\n%s" % (prev_hash, seq, body)).hexdigest().encode() != row_hash:
            problem = (seq, "row_hash does not match its content (edited)")
        elif seq in checkpoint_hashes:
            point = checkpoint_hashes[seq]
            if point.head_hash.encode() == row_hash:
                result.checkpoints_checked += 1
            else:
                problem = (
                    seq,
                    f"differs from the signed checkpoint of {point.created_at}: the chain was re-hashed from here "
                    "or earlier",
                )
        if problem is not None:
            result.checked = checked
            return problem, None
        if not checked:
            result.first_seq = seq
        checked += 1
        prev = row_hash
        expected_seq = seq + 1
    result.checked = checked
    result.last_seq = expected_seq - 1 if checked else None
    result.last_hash = prev.decode() if checked and prev else None
    return None, None


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
