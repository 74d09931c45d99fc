"""The hash chain: an intact chain verifies, and every way of tampering with it with raw
SQL (as someone with database access would) is reported at the first broken seq, with why.
Chaining under concurrent writers never forks or leaves gaps."""

import hashlib
import json
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction

from apps import audit
from apps.audit import chain
from apps.audit.canonical import GENESIS_HASH, canonical_json, chain_hash
from apps.audit.chain import chain_pending, verify_chain
from apps.audit.checkpoints import make_checkpoint, write_checkpoint
from apps.audit.models import AuditEvent, PendingEvent

pytestmark = pytest.mark.django_db

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL); SQLite has one writer at a time"
)

TABLE = AuditEvent._meta.db_table
START = datetime(2026, 1, 1, tzinfo=UTC)


@contextmanager
def tampering():
    """A cursor that may rewrite audit rows, as an attacker with database access: on
    PostgreSQL the append-only trigger is switched off for this session (the tests run as
    a superuser). SQLite has no trigger."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        try:
            yield cursor
        finally:
            if connection.vendor == "postgresql":
                cursor.execute("SET session_replication_role = DEFAULT")


def body_of(seq: int) -> str:
    return AuditEvent.objects.get(seq=seq).body


def edited(body: str, **changes) -> str:
    return canonical_json({**json.loads(body), **changes})


def set_body(cursor, seq: int, body: str) -> None:
    # The search columns are generated from the body: they follow it.
    cursor.execute(f"UPDATE {TABLE} SET body = %s WHERE seq = %s", [body, seq])  # noqa: S608


def rehash_from(cursor, seq: int) -> None:
    """Recompute prev_hash and row_hash of ``seq`` and every row after it, so the chain
    is consistent again from there (the attack only a signed checkpoint catches)."""
    prev = AuditEvent.objects.get(seq=seq - 1).row_hash if seq > 1 else GENESIS_HASH
    for row_seq, body in AuditEvent.objects.filter(seq__gte=seq).order_by("seq").values_list("seq", "body"):
        row_hash = chain_hash(prev, row_seq, body)
        cursor.execute(
            f"UPDATE {TABLE} SET prev_hash = %s, row_hash = %s WHERE seq = %s",  # noqa: S608
            [prev, row_hash, row_seq],
        )
        prev = row_hash


def record_events(count: int, *, first: int = 1) -> None:
    for number in range(first, first + count):
        audit.record(
            "tool.executed",
            tenant=1 + number % 2,
            tool=f"tool_{number}",
            outcome="ok",
            occurred_at=START + timedelta(days=number),
        )
    chain_pending()


@pytest.fixture
def events():
    record_events(20)
    return list(AuditEvent.objects.order_by("seq"))


def test_an_intact_chain_verifies(events):
    result = verify_chain()
    assert result.ok
    assert (result.checked, result.first_seq, result.last_seq) == (20, 1, 20)
    assert result.last_hash == events[-1].row_hash
    assert result.broken_seq is None
    assert result.summary() == "OK: 20 events verified (seq 1..20)."

    # Recomputed independently of the code under test: sha256(prev + "\n" + seq + "\n" + body).
    prev = "0" * 64
    for number, event in enumerate(events, start=1):
        assert event.seq == number
        assert event.prev_hash == prev
        assert event.row_hash == hashlib.sha256(f"{prev}\n{number}\n{event.body}".encode()).hexdigest()
        prev = event.row_hash


def test_an_empty_chain_verifies():
    result = verify_chain()
    assert result.ok
    assert result.checked == 0
    assert result.summary() == "OK: 0 events verified."


def test_events_waiting_to_be_chained_are_reported():
    record_events(2)
    audit.record("tool.executed")  # pending: no commit in this test's transaction
    result = verify_chain()
    assert result.ok
    assert result.pending == 1
    assert "1 event(s) still waiting to be chained" in result.summary()


def test_chaining_in_batches_numbers_across_batches(monkeypatch):
    monkeypatch.setattr(chain, "CHAIN_BATCH", 3)
    for number in range(8):
        audit.record("tool.executed", tool=f"tool_{number}")
    assert chain_pending() == 8
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, 9))
    assert not PendingEvent.objects.exists()
    assert verify_chain().checked == 8


# --- Tampering -------------------------------------------------------------------------


def test_an_edited_body_is_reported_as_edited(events):
    with tampering() as cursor:
        set_body(cursor, 7, edited(body_of(7), outcome="denied"))
    assert AuditEvent.objects.get(seq=7).outcome == "denied"  # the column followed the body
    result = verify_chain()
    assert not result.ok
    assert result.broken_seq == 7
    assert "edited" in result.problem
    assert result.summary().startswith("BROKEN at seq 7: ")


def test_a_deleted_row_is_reported_as_a_gap(events):
    with tampering() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE seq = 8")  # noqa: S608
    result = verify_chain()
    assert not result.ok
    assert result.broken_seq == 8
    assert "gap" in result.problem
    assert "deleted" in result.problem


def test_swapped_rows_are_reported_as_reordered(events):
    with tampering() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET seq = -5 WHERE seq = 5")  # noqa: S608
        cursor.execute(f"UPDATE {TABLE} SET seq = 5 WHERE seq = 6")  # noqa: S608
        cursor.execute(f"UPDATE {TABLE} SET seq = 6 WHERE seq = -5")  # noqa: S608
    result = verify_chain()
    assert not result.ok
    assert result.broken_seq == 5
    assert "reordered" in result.problem


def test_a_deletion_hidden_by_renumbering_is_reported_where_it_happened(events):
    with tampering() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE seq = 5")  # noqa: S608
        for seq in range(6, 21):
            cursor.execute(f"UPDATE {TABLE} SET seq = %s WHERE seq = %s", [seq - 1, seq])  # noqa: S608
    result = verify_chain()
    assert not result.ok
    assert result.broken_seq == 5  # seq 4 is intact: not "edited and re-hashed"
    assert "renumbered" in result.problem


def test_an_edited_prev_hash_is_reported_at_its_own_row(events):
    with tampering() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET prev_hash = %s WHERE seq = 7", ["e" * 64])  # noqa: S608
    result = verify_chain()
    assert not result.ok
    assert result.broken_seq == 7
    assert "edited" in result.problem


def test_swapped_bodies_are_reported_at_the_first_of_them(events):
    fifth, sixth = body_of(5), body_of(6)
    with tampering() as cursor:
        # Through a placeholder: event_id (generated from the body) is unique.
        set_body(cursor, 5, edited(fifth, event_id="placeholder"))
        set_body(cursor, 6, fifth)
        set_body(cursor, 5, sixth)
    assert AuditEvent.objects.get(seq=5).tool == "tool_6"
    result = verify_chain()
    assert not result.ok
    assert result.broken_seq == 5
    assert "edited" in result.problem or "reordered" in result.problem


def test_a_row_edited_and_re_hashed_alone_is_reported_at_that_row(events):
    body = edited(body_of(9), outcome="denied")
    with tampering() as cursor:
        set_body(cursor, 9, body)
        cursor.execute(
            f"UPDATE {TABLE} SET row_hash = %s WHERE seq = 9",  # noqa: S608
            [chain_hash(events[7].row_hash, 9, body)],
        )
    result = verify_chain()
    assert not result.ok
    assert result.broken_seq == 9
    assert "edited and re-hashed" in result.problem


def test_re_hashing_the_rest_of_the_chain_is_caught_only_by_a_signed_checkpoint(events):
    before = make_checkpoint(20, events[-1].row_hash)
    with tampering() as cursor:
        set_body(cursor, 9, edited(body_of(9), outcome="denied"))
        rehash_from(cursor, 9)

    # The chain alone is consistent again: this is what checkpoints are for.
    assert verify_chain().ok
    assert verify_chain().checked == 20

    result = verify_chain(checkpoints=[before])
    assert not result.ok
    assert result.broken_seq == 20
    assert "re-hashed" in result.problem
    assert before.created_at in result.problem


def test_a_checkpoint_before_the_tampered_row_still_holds_and_a_later_one_fails(events):
    early = make_checkpoint(4, events[3].row_hash)
    late = make_checkpoint(12, events[11].row_hash)
    with tampering() as cursor:
        set_body(cursor, 9, edited(body_of(9), outcome="denied"))
        rehash_from(cursor, 9)
    assert verify_chain(checkpoints=[early]).ok
    assert verify_chain(checkpoints=[early]).checkpoints_checked == 1
    result = verify_chain(checkpoints=[early, late])
    assert not result.ok
    assert result.broken_seq == 12
    assert result.checkpoints_checked == 1


def test_a_deleted_tail_is_caught_only_by_a_checkpoint_beyond_it(events):
    checkpoint = make_checkpoint(20, events[-1].row_hash)
    with tampering() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE seq >= 19")  # noqa: S608
    alone = verify_chain()
    assert alone.ok
    assert alone.checked == 18

    result = verify_chain(checkpoints=[checkpoint])
    assert not result.ok
    assert result.broken_seq == 19
    assert "ends at seq 18" in result.problem
    assert "seq 20" in result.problem
    assert "deleted" in result.problem


def test_search_columns_cannot_be_written_apart_from_the_body(events):
    """Even with the trigger off, a generated column refuses a direct write: a search
    column can only change by changing the hashed body."""
    with (
        tampering() as cursor,
        pytest.raises(DatabaseError, match=r"(?i)generated|only be updated to DEFAULT"),
        transaction.atomic(),
    ):
        cursor.execute(f"UPDATE {TABLE} SET tool = 'forged' WHERE seq = 3")  # noqa: S608
    assert AuditEvent.objects.get(seq=3).tool == "tool_3"


# --- Verifying part of the chain ----------------------------------------------------------


def test_since_a_seq_verifies_from_there(events):
    result = verify_chain(since=11)
    assert result.ok
    assert (result.checked, result.first_seq, result.last_seq) == (10, 11, 20)

    with tampering() as cursor:
        set_body(cursor, 5, edited(body_of(5), outcome="denied"))
    assert verify_chain(since=11).ok
    assert verify_chain(since=5).broken_seq == 5
    assert verify_chain(since=0).broken_seq == 5  # 0 means the whole chain, not a gap before seq 1


def test_since_a_seq_still_checks_the_link_to_the_row_before(events):
    with tampering() as cursor:
        set_body(cursor, 10, edited(body_of(10), outcome="denied"))
        cursor.execute(
            f"UPDATE {TABLE} SET row_hash = %s WHERE seq = 10",  # noqa: S608
            [chain_hash(events[8].row_hash, 10, body_of(10))],
        )
    result = verify_chain(since=11)
    assert not result.ok
    assert result.broken_seq == 10


def test_since_a_seq_reports_the_deleted_row_before_it(events):
    with tampering() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE seq = 10")  # noqa: S608
    result = verify_chain(since=11)
    assert not result.ok
    assert result.broken_seq == 10
    assert "missing" in result.problem
    assert verify_chain(since=10).broken_seq == 10
    assert verify_chain(since=12).ok


def test_since_a_time_verifies_the_events_from_then(events):
    result = verify_chain(since=START + timedelta(days=11))
    assert result.ok
    assert (result.checked, result.first_seq) == (10, 11)

    later = verify_chain(since=START + timedelta(days=11, hours=1))
    assert (later.checked, later.first_seq) == (9, 12)

    after_everything = verify_chain(since=START + timedelta(days=100))
    assert after_everything.ok
    assert after_everything.checked == 0


def test_a_checkpoint_before_since_is_not_checked(events):
    stale = make_checkpoint(3, "f" * 64)  # would fail if it were checked
    assert verify_chain(since=5, checkpoints=[stale]).ok
    assert verify_chain(checkpoints=[stale]).broken_seq == 3


# --- The schema -------------------------------------------------------------------------


def _stop_generating_tool_column(cursor) -> None:
    if connection.vendor == "postgresql":
        cursor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN tool DROP EXPRESSION")
        return
    # SQLite cannot alter a column: rebuild the table with ``tool`` as a plain column.
    cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = %s", [TABLE])
    create = cursor.fetchone()[0]
    generated = """"tool" varchar(100) GENERATED ALWAYS AS (json_extract("body", '$.tool')) STORED"""
    assert generated in create
    plain = create.replace(generated, '"tool" varchar(100)').replace(f'"{TABLE}"', '"audit_rebuilt"', 1)
    cursor.execute(plain)
    cursor.execute(
        f"INSERT INTO audit_rebuilt (seq, prev_hash, row_hash, body, tool) "  # noqa: S608
        f"SELECT seq, prev_hash, row_hash, body, tool FROM {TABLE}"
    )
    cursor.execute(f"DROP TABLE {TABLE}")
    cursor.execute(f"ALTER TABLE audit_rebuilt RENAME TO {TABLE}")


def test_a_search_column_no_longer_generated_from_the_body_is_reported(events):
    with connection.cursor() as cursor:
        _stop_generating_tool_column(cursor)
    result = verify_chain()
    assert not result.ok
    assert "schema altered" in result.problem
    assert "tool" in result.problem
    assert "occurred_at" not in result.problem


# --- Concurrent writers -----------------------------------------------------------------


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_in_threads_never_fork_or_leave_gaps():
    writers, per_writer = 8, 50
    barrier = threading.Barrier(writers)
    errors = []

    def write(number: int) -> None:
        try:
            barrier.wait()
            if number % 2:
                for index in range(per_writer):  # one transaction (and one chaining) per event
                    audit.record("tool.executed", tool=f"writer_{number}", payload={"index": index})
            else:
                for batch in range(0, per_writer, 5):  # five events per transaction
                    with transaction.atomic():
                        for index in range(batch, batch + 5):
                            audit.record("tool.executed", tool=f"writer_{number}", payload={"index": index})
        except Exception as error:  # reported below, with the thread's context gone
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(number,)) for number in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, 401))
    assert not PendingEvent.objects.exists()
    for number in range(writers):
        indexes = [json.loads(body)["payload"]["index"] for body in _bodies(tool=f"writer_{number}")]
        assert indexes == list(range(per_writer))  # each writer's events in its own order
    result = verify_chain()
    assert result.ok
    assert result.checked == 400


def _bodies(**filters):
    return AuditEvent.objects.filter(**filters).order_by("seq").values_list("body", flat=True)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_in_processes_never_fork_or_leave_gaps(tmp_path):
    processes_count, per_process = 4, 100
    database = connection.settings_dict
    url = (
        f"postgres://{database['USER']}:{database['PASSWORD'] or ''}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )
    go = tmp_path / "go"
    # Each process starts Django, connects, says so, and waits for the others: the writes overlap.
    script = (
        "import os, time\n"
        "from django.db import connection\n"
        "from apps import audit\n"
        "connection.ensure_connection()\n"
        "print('ready', flush=True)\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.002)\n"
        f"for index in range({per_process}):\n"
        "    audit.record('tool.executed', tool='process_{number}', payload={{'index': index}})\n"
    )
    manage = Path(settings.BASE_DIR) / "manage.py"
    env = {**os.environ, "DATABASE_URL": url}
    processes = [
        subprocess.Popen(  # noqa: S603 — our own interpreter and manage.py
            [sys.executable, str(manage), "shell", "-c", script.format(number=number)],
            env=env,
            cwd=settings.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for number in range(processes_count)
    ]
    try:
        for process in processes:
            line = process.stdout.readline()
            while line not in (b"ready\n", b""):  # the shell may print its own lines first
                line = process.stdout.readline()
            assert line == b"ready\n", process.communicate(timeout=10)[1].decode()
        go.touch()
        for process in processes:
            _out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err.decode()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    total = processes_count * per_process
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, total + 1))
    assert not PendingEvent.objects.exists()
    for number in range(processes_count):
        indexes = [json.loads(body)["payload"]["index"] for body in _bodies(tool=f"process_{number}")]
        assert indexes == list(range(per_process))
    assert verify_chain().checked == total
    assert write_checkpoint().seq == total


@postgresql_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tampered_seq", [None, 3, 9, 10, 17])
def test_verifying_in_parallel_ranges_finds_what_one_walk_finds(monkeypatch, tampered_seq):
    """Ranges of 7 rows across 3 processes (10 and 17 start ranges: their links are checked
    against the stored hash of the row before, verified by the range before)."""
    monkeypatch.setattr(chain, "PARALLEL_MIN_ROWS", 1)
    record_events(20)
    if tampered_seq is not None:
        with tampering() as cursor:
            set_body(cursor, tampered_seq, edited(body_of(tampered_seq), tool="tampered"))
    checkpoint = make_checkpoint(20, AuditEvent.objects.get(seq=20).row_hash)

    single = verify_chain(checkpoints=[checkpoint])
    parallel = verify_chain(checkpoints=[checkpoint], workers=3)

    assert chain._ranges(1, 20, 3) == [(1, 7), (8, 14), (15, None)]
    assert (parallel.ok, parallel.broken_seq, parallel.problem) == (single.ok, single.broken_seq, single.problem)
    assert parallel.checked == single.checked
    if tampered_seq is None:
        assert (parallel.checked, parallel.last_seq, parallel.checkpoints_checked) == (20, 20, 1)
    else:
        assert parallel.broken_seq == tampered_seq and "edited" in parallel.problem


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_an_event_is_appended_in_one_call_and_hashes_like_python():
    record_events(3)
    assert not PendingEvent.objects.exists()
    rows = list(AuditEvent.objects.order_by("seq").values_list("seq", "prev_hash", "row_hash", "body"))
    assert [row[0] for row in rows] == [1, 2, 3]
    prev = GENESIS_HASH
    for seq, prev_hash, row_hash, body in rows:  # the database function's hashes, recomputed here
        assert (prev_hash, row_hash) == (prev, chain_hash(prev, seq, body))
        prev = row_hash


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_when_the_append_call_fails_the_event_is_kept_as_pending(monkeypatch):
    monkeypatch.setattr(chain, "_APPEND", "SELECT no_such_audit_function(%s, %s, %s)")
    audit.record("tool.executed", tool="refund.issue")
    assert AuditEvent.objects.count() == 0
    assert PendingEvent.objects.count() == 1
    monkeypatch.undo()
    assert chain_pending() == 1
    assert verify_chain().checked == 1
