"""Benchmark: the audit trail on PostgreSQL.

1. Append 100,000 events through ``audit.record`` with 1 and with 8 concurrent writer
   processes, against plain inserts of the same rows (same body, same generated search
   columns and indexes, one autocommit INSERT each) with no chain, measured in the same
   run: events/s and the ratio. Target: chained >= 50% of plain at 8 writers.
2. Verify a 1,000,000-event chain (``verify_chain``, as ``manage.py audit_verify`` runs it:
   one process per CPU, at most 4, each over a consecutive range; and with one process):
   rows/s. Target >= 300,000 rows/s.
3. Export those 1,000,000 events to CSV (``manage.py audit_export`` in a child process, so
   its peak RSS is its own): seconds and peak RSS. Targets: < 15 s, < 200 MB.

Runs on a throwaway database (created and dropped here). Needs PostgreSQL: uses
DATABASE_URL if it names one, else postgres://postgres@127.0.0.1:5432/controlplane.
Smaller runs for a quick look: AUDIT_BENCH_EVENTS=20000 AUDIT_BENCH_CHAIN=200000.
"""

import multiprocessing
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
    os.environ["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/controlplane"
os.environ["DEBUG"] = "false"
os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-not-used-anywhere-else-0123456789")
os.environ.setdefault("AUDIT_SIGNING_KEY", "benchmark-only-audit-signing-key")
os.environ["AUDIT_CHECKPOINT_DIR"] = tempfile.mkdtemp(prefix="audit-bench-checkpoints-")
os.environ.pop("REDIS_URL", None)

import django  # noqa: E402 — settings come from the environment set above

django.setup()

from django.db import connection, connections  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

APPEND_EVENTS = int(os.environ.get("AUDIT_BENCH_EVENTS", "100000"))
CHAIN_EVENTS = int(os.environ.get("AUDIT_BENCH_CHAIN", "1000000"))
TOOLS = ("crm.read", "ticket.create", "refund.issue", "order.lookup", "knowledge.search")
TYPES = ("turn.received", "guardrail.verdict", "knowledge.retrieved", "model.called", "tool.executed")


def event_fields(number: int) -> tuple[str, dict]:
    """A realistic event: ids, names, roles, arguments, sources and a small payload."""
    return TYPES[number % len(TYPES)], {
        "tenant": 1 + number % 5,
        "actor": 100 + number % 40,
        "actor_roles": ["support_agent"],
        "agent": 10 + number % 12,
        "conversation_id": f"c-{number // 20}",
        "turn_id": f"t-{number // 5}",
        "tool": TOOLS[number % len(TOOLS)],
        "arguments": {"order_id": f"A-{number:08d}", "amount": number % 500, "note": "customer asked for a refund"},
        "decision": "allow",
        "outcome": "ok",
        "latency_ms": 12.5,
        "model": "gpt-4o-mini",
        "prompt_version": 3,
        "cost": "0.00042",
        "sources": [{"id": number % 300, "title": "Refund policy (US)", "version": 4}],
        "payload": {"input_tokens": 812, "output_tokens": 96, "channel": "web_chat"},
    }


# --- 1. Appending ------------------------------------------------------------------------


def _writer(kind: str, start: int, count: int, barrier, results) -> None:
    from apps import audit
    from apps.audit.services import build_body

    connections["default"].ensure_connection()
    barrier.wait()
    begun = time.perf_counter()
    if kind == "chained":
        for number in range(start, start + count):
            event_type, fields = event_fields(number)
            audit.record(event_type, **fields)
    else:
        with connection.cursor() as cursor:
            for number in range(start, start + count):
                event_type, fields = event_fields(number)
                cursor.execute("INSERT INTO bench_plain_event (body) VALUES (%s)", [build_body(event_type, **fields)])
    results.put(time.perf_counter() - begun)
    connections.close_all()


def append_rate(kind: str, writers: int, events: int) -> float:
    """Events/s for ``events`` appended by ``writers`` processes, wall clock from a common start."""
    connections.close_all()  # children must not share the parent's socket
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(writers + 1), context.Queue()
    share = events // writers
    processes = [
        context.Process(target=_writer, args=(kind, index * share, share, barrier, results)) for index in range(writers)
    ]
    for process in processes:
        process.start()
    barrier.wait()
    begun = time.perf_counter()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - begun
    if any(process.exitcode for process in processes):
        raise SystemExit(f"a {kind} writer failed")
    return share * writers / elapsed


def create_plain_table() -> None:
    """The same row shape as audit_auditevent (body, generated columns, search indexes),
    numbered by a plain sequence instead of the chain."""
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_plain_event")
        cursor.execute(
            "CREATE TABLE bench_plain_event (LIKE audit_auditevent INCLUDING GENERATED INCLUDING INDEXES "
            "INCLUDING DEFAULTS)"
        )
        cursor.execute("ALTER TABLE bench_plain_event DROP COLUMN prev_hash, DROP COLUMN row_hash")
        cursor.execute("CREATE SEQUENCE bench_plain_seq OWNED BY bench_plain_event.seq")
        cursor.execute("ALTER TABLE bench_plain_event ALTER COLUMN seq SET DEFAULT nextval('bench_plain_seq')")


def reset_tables() -> None:
    """Empty both tables between runs (the append-only triggers are bypassed for this
    throwaway database only)."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("TRUNCATE audit_auditevent, audit_pendingevent, bench_plain_event")
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("VACUUM ANALYZE audit_auditevent")


def bench_append() -> None:
    from apps.audit.chain import verify_chain

    create_plain_table()
    print(f"\nappend {APPEND_EVENTS:,} events (one autocommit transaction per event)")
    for writers in (1, 8):
        rates = {}
        for kind in ("plain", "chained"):
            reset_tables()
            rates[kind] = append_rate(kind, writers, APPEND_EVENTS)
        check = verify_chain()
        assert check.ok and check.checked == APPEND_EVENTS // writers * writers, check.summary()
        print(
            f"  {writers} writer(s): plain {rates['plain']:,.0f} events/s, chained {rates['chained']:,.0f} events/s,"
            f" ratio {rates['chained'] / rates['plain']:.2f}  (chain verified: {check.checked:,} events, no gaps)"
        )


# --- 2. Verifying ---------------------------------------------------------------------------


def load_chain(events: int) -> None:
    """A valid chain of ``events`` rows, loaded with COPY (appending them one by one through
    record() would take most of an hour and measure nothing new)."""
    from apps.audit.canonical import GENESIS_HASH, chain_hash
    from apps.audit.services import build_body

    reset_tables()
    rng = random.Random(7)
    prev = GENESIS_HASH
    started = time.perf_counter()
    raw = connection.cursor().cursor  # psycopg cursor, for COPY
    with raw.copy("COPY audit_auditevent (seq, prev_hash, row_hash, body) FROM STDIN") as copy:
        for seq in range(1, events + 1):
            event_type, fields = event_fields(rng.randrange(10_000_000))
            body = build_body(event_type, **fields)
            row_hash = chain_hash(prev, seq, body)
            copy.write_row((seq, prev, row_hash, body))
            prev = row_hash
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE audit_auditevent")
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('audit_auditevent'))")
        size = cursor.fetchone()[0]
    print(f"\nloaded a chain of {events:,} events in {time.perf_counter() - started:.0f} s ({size} with indexes)")


def bench_verify(events: int) -> None:
    from apps.audit.chain import verify_chain

    workers = min(4, os.cpu_count() or 1)
    for label, processes in (("1 process, cold cache", 1), ("1 process", 1), (f"{workers} processes", workers)):
        started = time.perf_counter()
        result = verify_chain(workers=processes)
        elapsed = time.perf_counter() - started
        assert result.ok and result.checked == events, result.summary()
        print(f"  verify ({label}): {events:,} rows in {elapsed:.2f} s = {events / elapsed:,.0f} rows/s")


# --- 3. Exporting --------------------------------------------------------------------------


def bench_export(events: int) -> None:
    output = Path(tempfile.mkdtemp(prefix="audit-bench-export-")) / "audit-events.csv"
    database = connection.settings_dict
    environment = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/"
        f"{database['NAME']}",
    }
    started = time.perf_counter()
    child = subprocess.Popen(  # noqa: S603 — fixed argument list, no shell
        [sys.executable, "manage.py", "audit_export", "--format", "csv", "--output", str(output)],
        cwd=REPOSITORY,
        env=environment,
    )
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit("audit_export failed")
    size_mb = output.stat().st_size / 1e6
    print(
        f"  export CSV: {events:,} rows ({size_mb:,.0f} MB) in {elapsed:.1f} s, "
        f"peak RSS {usage.ru_maxrss / 1024:.0f} MB (whole process, Django included)"
    )
    started = time.perf_counter()
    checked = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "audit_verify_export", str(output)],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    print(f"  verify the export offline: {time.perf_counter() - started:.1f} s: {checked.stdout.strip()}")
    for path in output.parent.iterdir():
        path.unlink()
    output.parent.rmdir()


def main() -> None:
    setup_test_environment()
    # Its own database name: never clobber the test suite's test_controlplane.
    connection.settings_dict["TEST"]["NAME"] = "bench_audit"
    database_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            version = cursor.fetchone()[0].split(",")[0]
        print(f"database: {version} ({database_name}), {os.cpu_count()} CPUs")
        bench_append()
        load_chain(CHAIN_EVENTS)
        bench_verify(CHAIN_EVENTS)
        bench_export(CHAIN_EVENTS)
        print(f"  (bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    finally:
        connections.close_all()
        connection.creation.destroy_test_db(database_name, verbosity=0)


if __name__ == "__main__":
    main()
