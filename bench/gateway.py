"""Benchmark: the tool gateway's overhead (``apps.tools.gateway.invoke``) on PostgreSQL and Redis.

10,000 calls of a no-op built-in tool (``bench.noop``) through the full path: the agent and
kill-switch check, the tool and allowlist lookup, schema validation, the acting user's roles
and grants, the rollout mode, the rate limits (Redis, as in production: REDIS_URL switches
the cache to Redis), the ToolCall row under its idempotency key, the ``tool.requested`` and
``tool.executed`` audit events (appended to the hash chain) and the connector. 4 worker
processes run 2,500 calls each, after a warm-up, with distinct idempotency keys (no turn id:
a fresh key per call). Each worker also times, interleaved with them, 2,500 direct calls of
the same tool (``connectors.run(Invocation(...))``: the built-in ``noop`` as the gateway's
connector step runs it): the baseline, measured the same way in the same run.

Prints p50/p95/p99 of the gateway latency and of the direct latency, the overhead
(percentiles of the gateway latency minus the direct median), the ratio gateway/direct,
throughput (gateway calls/s, all workers together), CPU time per call (the worker and its
PostgreSQL backend: wall time also holds waits for a CPU), the queries and Redis commands of
one call (``--verbose``: their text), and checks afterwards that every call was recorded and
executed and that the audit chain verifies. Target: p95 overhead < 5 ms.

The floor, measured the same way in the same run (blocks of its calls alternate with the
gateway's, so both see the machine in the same state): the same calls' durable writes alone
(the ToolCall row and its two chained audit events, through the gateway's own
``_record_request`` and ``_execute``, on a decision taken once), with no read, no checks, no
Redis. It is what keeping those records costs on this machine, whatever decides the call.

``--profile N`` then runs N calls in this process alone: time per section of ``invoke``
(inclusive, per call), per SQL statement, and the top functions by cProfile.
``--unprepared`` runs with PREPARED_STATEMENTS off (as behind a connection pooler that
cannot carry prepared statements), for comparison.

Runs on its own throwaway database, bench_gateway (created and dropped here; ``--keep``
leaves it), on the server DATABASE_URL names (default postgres://postgres@127.0.0.1:5432/),
and Redis database 9 at redis://127.0.0.1:6379/ (flushed at the start;
GATEWAY_BENCH_REDIS_URL names another). The machine's load average is printed: the workers
share the CPUs with PostgreSQL and Redis.

python bench/gateway.py [--calls 10000] [--workers 4] [--verbose] [--keep] [--profile 2000] [--unprepared] [--no-floor]
"""

import argparse
import cProfile
import io
import multiprocessing
import os
import pstats
import queue
import re
import statistics
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

from _support import BENCH_GATE_OVERRIDE, configure, percentile, platform_admin, services_line, throwaway_database

configure("gateway", redis_variable="GATEWAY_BENCH_REDIS_URL", redis_url="redis://127.0.0.1:6379/9")

import django  # noqa: E402 — settings come from the environment set above

django.setup()

import psycopg  # noqa: E402
import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402

from apps import audit  # noqa: E402
from apps.tools import connectors  # noqa: E402
from apps.tools import gateway as gateway_module  # noqa: E402
from apps.tools.choices import Outcome  # noqa: E402
from apps.tools.gateway import TurnContext, invoke  # noqa: E402
from apps.tools.models import Tool, ToolCall  # noqa: E402

DATABASE_NAME = "bench_gateway"
TOOL_NAME = "bench.noop"
TARGET_P95_OVERHEAD_MS = 5.0
# The shipped guardrail policy allows one person 200 calls of a tool a day; the benchmark's
# one user makes 10,000. A tenant policy raises the limit (the check and its counter still run).
DAILY_LIMIT = 10_000_000
POLICY_DOCUMENT = f"rate_limits:\n  per_tool_per_user_per_day:\n    {TOOL_NAME}: {DAILY_LIMIT}\n"


# --- Setup --------------------------------------------------------------------------------


def build_fixture() -> dict:
    """Tenant, owner (admin), support user, autonomous agent, the no-op tool, its allowlist
    row and grant, made through the services production uses."""
    from apps.accounts.choices import RoleKind
    from apps.accounts.models import Role, User
    from apps.accounts.services import assign_role, create_tenant
    from apps.agents.choices import RolloutMode
    from apps.agents.services import create_agent
    from apps.guardrails.services import activate_policy, save_policy
    from apps.tools.builtins import SCHEMAS
    from apps.tools.choices import ConnectorKind, Effect, RiskTier
    from apps.tools.services import allow_tool, create_grant, save_tool

    tenant = create_tenant(name="Bench gateway", slug="benchgw")
    roles = {role.kind: role for role in Role.objects.filter(tenant=tenant)}
    owner = User.objects.create_user(username="bench-owner", password="bench-password")
    assign_role(user=owner, role=roles[RoleKind.ADMIN])
    assign_role(user=owner, role=roles[RoleKind.AGENT_OWNER])
    user = User.objects.create_user(username="bench-support", password="bench-password")
    assign_role(user=user, role=roles[RoleKind.SUPPORT_AGENT])
    agent = create_agent(
        by=platform_admin(),
        gate_override=BENCH_GATE_OVERRIDE,
        tenant=tenant,
        name="Bench agent",
        slug="bench-agent",
        purpose="Calls a no-op tool for the gateway benchmark.",
        owner=owner,
        channels=["web_chat"],
        rollout_mode=RolloutMode.AUTONOMOUS,
    )
    tool = save_tool(
        by=owner,
        tenant=tenant,
        name=TOOL_NAME,
        description="Does nothing (gateway benchmark).",
        argument_schema=SCHEMAS["noop"],
        risk_tier=RiskTier.LOW,
        writes=False,
        connector=ConnectorKind.BUILTIN,
        builtin="noop",
    )
    allow_tool(agent=agent, tool=tool, by=owner, reason="benchmark")
    create_grant(by=owner, role=roles[RoleKind.SUPPORT_AGENT], tool=tool, effect=Effect.ALLOW, note="benchmark")
    policy = save_policy(document=POLICY_DOCUMENT, by=owner, tenant=tenant, change_note="benchmark volume")
    activate_policy(policy=policy, by=owner, reason="benchmark volume")
    return {"tenant": tenant.pk, "agent": agent.pk, "user": user.pk, "tool": tool.pk}


def turn_context(ids: dict) -> TurnContext:
    return TurnContext(tenant_id=ids["tenant"], agent_id=ids["agent"], user_id=ids["user"], channel="web_chat")


def direct_call(tool: Tool, context: TurnContext, roles: frozenset) -> dict:
    """The baseline: what the gateway's connector step runs, without the gateway."""
    return connectors.run(connectors.Invocation(tool, {}, context, roles, "direct"))


# --- Measuring ----------------------------------------------------------------------------


def summary(samples: list[float], digits: int = 3) -> str:
    return (
        f"p50 {statistics.median(samples):.{digits}f} ms  p95 {percentile(samples, 0.95):.{digits}f} ms"
        f"  p99 {percentile(samples, 0.99):.{digits}f} ms  mean {statistics.mean(samples):.{digits}f} ms"
        f"  max {max(samples):.{digits}f} ms"
    )


def backend_cpu_seconds(backend_pid: int) -> float | None:
    """CPU time of a PostgreSQL backend so far (Linux, a local server only)."""
    try:
        return int(Path(f"/proc/{backend_pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def records_only(context: TurnContext):
    """The floor: the durable writes of one executed call and nothing else. The same rows,
    events and statements as the gateway's (``_record_request``, then ``_execute`` with its
    connector), on a decision taken once: no read, no checks, no Redis, no redaction."""
    found = gateway_module.facts.read(context.tenant_id, context.agent_id, context.user_id, TOOL_NAME)
    taken = gateway_module.authorize(context, found, TOOL_NAME, {})
    assert taken.outcome == Outcome.EXECUTING, taken

    def record() -> gateway_module.ToolResult:
        decision = gateway_module.Decision(
            taken.outcome, taken.reason_code, taken.reason, effect=taken.effect, grant_ids=taken.grant_ids
        )
        decision.roles = taken.roles
        key = gateway_module.default_idempotency_key(context, TOOL_NAME, {})
        call = gateway_module._new_call(context, found.tool, TOOL_NAME, {}, {}, "floor", key, decision, found.run)
        gateway_module._record_request(context, call, decision, found.tool)
        return gateway_module._execute(call, found.tool, context, {}, decision.roles)

    return record


BLOCK = 100  # calls per block: the gateway's and the floor's blocks alternate


def _worker(index: int, count: int, warmup: int, ids: dict, barrier, results, floor: bool) -> None:
    """``count`` gateway calls, each followed by a direct call, and (``floor``) ``count``
    floor calls, in alternating blocks of BLOCK so both see the machine in the same state."""
    try:
        connections["default"].ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        context = turn_context(ids)
        tool = Tool.objects.select_related("connection").get(pk=ids["tool"])
        roles = frozenset({"support_agent"})
        calls = {"gateway": lambda: invoke(context, TOOL_NAME, {})}
        if floor:
            calls["floor"] = records_only(context)
        outcomes: Counter = Counter()
        for _ in range(warmup):
            for call in calls.values():
                outcomes[call().outcome] += 1
            direct_call(tool, context, roles)
        barrier.wait()
        measured = {name: {"ms": [], "cpu": 0.0, "backend_cpu": 0.0} for name in calls}
        direct_ms = []
        done = 0
        while done < count:
            size = min(BLOCK, count - done)
            for name, call in calls.items():
                cpu_before, backend_before = time.process_time(), backend_cpu_seconds(backend)
                for _ in range(size):
                    started = time.perf_counter()
                    result = call()
                    measured[name]["ms"].append((time.perf_counter() - started) * 1000)
                    outcomes[result.outcome] += 1
                    if name == "gateway":
                        started = time.perf_counter()
                        direct_call(tool, context, roles)
                        direct_ms.append((time.perf_counter() - started) * 1000)
                backend_after = backend_cpu_seconds(backend)
                measured[name]["cpu"] += time.process_time() - cpu_before
                if backend_before is None or backend_after is None:
                    measured[name]["backend_cpu"] = None
                elif measured[name]["backend_cpu"] is not None:
                    measured[name]["backend_cpu"] += backend_after - backend_before
            done += size
        results.put((index, None, measured, direct_ms, dict(outcomes)))
    except BaseException:  # report it: the parent is waiting for this worker's results
        results.put((index, traceback.format_exc(), {}, [], {}))
    finally:
        connections.close_all()


def run_workers(ids: dict, calls: int, workers: int, warmup: int, floor: bool) -> dict:
    """What the workers measured: per kind of call ("gateway", and "floor" when asked), its
    latencies, CPU and backend CPU; the direct calls; the outcomes."""
    connections.close_all()  # children must not share the parent's socket
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(workers), context.Queue()
    shares = [calls // workers + (1 if index < calls % workers else 0) for index in range(workers)]
    processes = [
        context.Process(target=_worker, args=(index, share, warmup, ids, barrier, results, floor))
        for index, share in enumerate(shares)
    ]
    for process in processes:
        process.start()
    collected = []
    while len(collected) < len(processes):  # before join: the queue must drain
        try:
            collected.append(results.get(timeout=5))
        except queue.Empty:
            if any(process.exitcode not in (None, 0) for process in processes):
                raise SystemExit("a worker failed without reporting") from None
    for process in processes:
        process.join()
    failures = [error for _index, error, *_rest in collected if error]
    if failures:
        raise SystemExit("a worker failed:\n" + failures[0])
    outcomes: Counter = Counter()
    for row in collected:
        outcomes.update(row[4])
    kinds = {}
    for name in collected[0][2]:
        backend = [row[2][name]["backend_cpu"] for row in collected]
        kinds[name] = {
            "ms": [sample for row in collected for sample in row[2][name]["ms"]],
            "cpu": sum(row[2][name]["cpu"] for row in collected),
            "backend_cpu": None if None in backend else sum(backend),
        }
    return {
        "kinds": kinds,
        "direct": [sample for row in collected for sample in row[3]],
        "outcomes": outcomes,
        "invokes": sum(shares) * len(kinds) + warmup * workers * len(kinds),
    }


def _cpu_ms(kind: dict) -> tuple[float, float | None]:
    """CPU per call: the worker's, and its PostgreSQL backend's (None when unreadable)."""
    calls = len(kind["ms"])
    backend = kind["backend_cpu"]
    return kind["cpu"] / calls * 1000, None if backend is None else backend / calls * 1000


def report(measured: dict, workers: int) -> None:
    gateway = measured["kinds"]["gateway"]
    gateway_ms, direct_ms = gateway["ms"], measured["direct"]
    direct_p50 = statistics.median(direct_ms)
    overhead = [sample - direct_p50 for sample in gateway_ms]
    p95 = percentile(overhead, 0.95)
    print(f"  gateway invoke  {summary(gateway_ms)}")
    print(f"  direct noop     {summary(direct_ms, 4)}")
    print(f"  overhead        {summary(overhead)}  (gateway latency minus the direct median)")
    print(
        f"  ratio gateway/direct: p50 {statistics.median(gateway_ms) / direct_p50:,.0f}x,"
        f" p95 {percentile(gateway_ms, 0.95) / percentile(direct_ms, 0.95):,.0f}x"
    )
    throughput = workers / statistics.mean(gateway_ms) * 1000  # Little's law: each worker makes one call at a time
    print(f"  throughput: {throughput:,.0f} gateway calls/s with {workers} workers (workers / mean latency)")
    cpu_ms, backend_ms = _cpu_ms(gateway)
    if backend_ms is not None:
        print(
            f"  CPU per call: {cpu_ms + backend_ms:.2f} ms (worker {cpu_ms:.2f} ms + its PostgreSQL backend"
            f" {backend_ms:.2f} ms; Redis and the chain's other backends not included)"
            f" vs mean wall {statistics.mean(gateway_ms):.2f} ms"
        )
        busy = throughput * (cpu_ms + backend_ms) / 1000 / (os.cpu_count() or 1)
        print(
            f"  the CPUs: {workers} worker(s) and their PostgreSQL backends on {os.cpu_count()} CPUs, which these"
            f" calls alone kept {busy:.0%} busy; a call's wall time beyond its {cpu_ms + backend_ms:.1f} ms of CPU"
            " is waiting: for a CPU, for the commit's flush to disk, for Redis"
        )
    else:
        print(f"  CPU per call (worker process only): {cpu_ms:.2f} ms")
    print(
        f"  target p95 overhead < {TARGET_P95_OVERHEAD_MS:g} ms: {'met' if p95 < TARGET_P95_OVERHEAD_MS else 'MISSED'}"
        f" ({p95:.2f} ms)"
    )


def report_floor(measured: dict) -> None:
    """The floor's latency and CPU, and what the gateway adds over it."""
    floor_ms, gateway_ms = measured["kinds"]["floor"]["ms"], measured["kinds"]["gateway"]["ms"]
    print(f"  writes alone    {summary(floor_ms)}")
    floor_cpu, gateway_cpu = (sum(filter(None, _cpu_ms(measured["kinds"][name]))) for name in ("floor", "gateway"))
    floor_p95, gateway_p95 = percentile(floor_ms, 0.95), percentile(gateway_ms, 0.95)
    print(
        f"  CPU per call: {floor_cpu:.2f} ms (worker + its PostgreSQL backend) vs the gateway's {gateway_cpu:.2f} ms;"
        f" p95 {floor_p95:.2f} ms vs the gateway's {gateway_p95:.2f} ms: the read, the checks, Redis and redaction"
        f" add {gateway_p95 - floor_p95:.2f} ms at p95 ({gateway_p95 / floor_p95:.2f}x the floor)"
    )
    print(
        f"  target p95 overhead < {TARGET_P95_OVERHEAD_MS:g} ms, for the writes alone:"
        f" {'met' if floor_p95 < TARGET_P95_OVERHEAD_MS else 'MISSED'} ({floor_p95:.2f} ms)"
    )


# --- Queries of one call ---------------------------------------------------------------------


def count_round_trips(context: TurnContext, verbose: bool) -> None:
    """The SQL and Redis commands of one call (after a first one: warm caches, grant use
    already noted). Audit chaining runs on a raw psycopg cursor, which Django's query log
    does not see, so statements are also counted at the driver."""
    invoke(context, TOOL_NAME, {})
    statements: list[str] = []
    commands: list[str] = []
    round_trips = [0]
    execute, execute_command = psycopg.Cursor.execute, redis.Redis.execute_command
    pipeline_execute = redis.client.Pipeline.execute

    def counted_execute(self, query, params=None, **kwargs):
        statements.append(query if isinstance(query, str) else repr(query))
        return execute(self, query, params, **kwargs)

    def counted_command(self, *args, **options):
        commands.append(" ".join(str(arg) for arg in args[:2]))
        round_trips[0] += 1
        return execute_command(self, *args, **options)

    def counted_pipeline(self, *args, **kwargs):
        commands.extend(" ".join(str(arg) for arg in command[:2]) + " (pipelined)" for command, _ in self.command_stack)
        round_trips[0] += 1
        return pipeline_execute(self, *args, **kwargs)

    psycopg.Cursor.execute, redis.Redis.execute_command = counted_execute, counted_command
    redis.client.Pipeline.execute = counted_pipeline
    try:
        with CaptureQueriesContext(connection) as captured:
            result = invoke(context, TOOL_NAME, {})
    finally:
        psycopg.Cursor.execute, redis.Redis.execute_command = execute, execute_command
        redis.client.Pipeline.execute = pipeline_execute
    assert result.outcome == Outcome.EXECUTED, result
    raw = len(statements) - len(captured.captured_queries)
    print(
        f"  queries per invoke: {len(statements)} SQL statements ({len(captured.captured_queries)} through Django,"
        f" as CaptureQueriesContext counts them, + {raw} on the driver's own cursor),"
        f" {len(commands)} Redis commands in {round_trips[0]} round trip(s)"
    )
    print("    (the first call after a grant's last_used_at is 5 minutes old adds one UPDATE)")
    if verbose:
        for number, sql in enumerate(statements, 1):
            print(f"    {number:2}. {' '.join(sql.split())}")
        for number, command in enumerate(commands, 1):
            print(f"    redis {number:2}. {command}")


# --- Checks --------------------------------------------------------------------------------


def check(expected_calls: int) -> bool:
    from apps.audit.chain import chain_pending, verify_chain
    from apps.audit.models import AuditEvent, PendingEvent

    calls = ToolCall.objects.filter(tool_name=TOOL_NAME)
    recorded = calls.count()
    by_outcome = dict(Counter(calls.values_list("outcome", flat=True)))
    chain_pending(wait=True)
    verified = verify_chain()
    requested = AuditEvent.objects.filter(event_type=audit.EventType.TOOL_REQUESTED).count()
    executed = AuditEvent.objects.filter(event_type=audit.EventType.TOOL_EXECUTED).count()
    pending = PendingEvent.objects.count()
    checks = [
        (f"ToolCall rows == calls made ({recorded:,} == {expected_calls:,})", recorded == expected_calls),
        (f"every call executed ({by_outcome})", by_outcome == {Outcome.EXECUTED: expected_calls}),
        (
            f"one tool.requested and one tool.executed event per call ({requested:,}, {executed:,})",
            requested == executed == expected_calls,
        ),
        (f"audit chain verifies: {verified.summary()}", verified.ok and pending == 0),
    ]
    for label, ok in checks:
        print(f"  [{'ok' if ok else 'FAILED'}] {label}")
    return all(ok for _label, ok in checks)


# --- Profile --------------------------------------------------------------------------------


def statement(query) -> str:
    """A short name for a SQL statement: its verb and table."""
    text = " ".join(str(query).split())
    if text.startswith("SELECT audit_append"):
        return "SELECT audit_append(...)"
    if text.startswith("WITH action AS ("):
        return statement(text[len("WITH action AS (") :]) + " + audit_append"
    outer = text
    while re.search(r"\([^()]*\)", outer):  # subqueries out: the main FROM names the table
        outer = re.sub(r"\([^()]*\)", "", outer)
    table = re.search(r'\b(?:FROM|INTO|UPDATE)\s+"?(\w+)', outer) or re.search(r'\bFROM\s+"?(\w+)', text)
    return f"{text.split(' ', 1)[0]} {table.group(1)}" if table else text[:40]


class Sections:
    """Inclusive wall time of chosen functions, by wrapping them where they are looked up."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self.detail: dict[str, list[float]] = defaultdict(list)
        self._restore: list[tuple[object, str, object]] = []

    def wrap(self, owner, name: str, label: str, by_call=None) -> None:
        """Time ``owner.name`` under ``label``; ``by_call(*args)``, if given, also under its
        answer (in ``detail``), e.g. each SQL statement apart."""
        original = getattr(owner, name)
        seconds, calls, detail = self.seconds, self.calls, self.detail

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                seconds[label] += elapsed
                calls[label] += 1
                if by_call is not None:
                    detail[by_call(*args)].append(elapsed)

        setattr(owner, name, timed)
        self._restore.append((owner, name, original))

    def restore(self) -> None:
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore.clear()


# The top-level sections: their sum, taken from invoke, leaves what is not wrapped.
TOP_LEVEL = ("facts.read (one SELECT)", "authorize", "_record_request (INSERT + tool.requested)")
TOP_LEVEL += ("_note_grant_use", "_execute")


def _sections() -> tuple[Sections, list[tuple[int, str]]]:
    from apps.audit import services as audit_services
    from apps.guardrails import counters
    from apps.guardrails import services as guardrail_services
    from apps.tools import facts

    sections = Sections()
    layout = [  # (depth, label): the order and nesting they are printed in
        (0, "facts.read (one SELECT)"),
        (0, "authorize"),
        (1, "schema_errors"),
        (1, "effective_policy_of"),
        (1, "_grant_decision"),
        (1, "_count_limits"),
        (2, "counters.increment (one round trip)"),
        (0, "redact (arguments; result in _execute)"),
        (0, "_record_request (INSERT + tool.requested)"),
        (0, "_note_grant_use"),
        (0, "_execute"),
        (1, "connectors.run"),
        (0, "audit.change_and_record (2 events)"),
        (1, "build_body"),
        (1, "change_and_chain"),
        (0, "psycopg execute (all SQL)"),
        (0, "redis round trips"),
    ]
    for name in ("authorize", "schema_errors", "_grant_decision", "_count_limits", "_note_grant_use", "_execute"):
        sections.wrap(gateway_module, name, name)
    sections.wrap(facts, "read", "facts.read (one SELECT)")
    sections.wrap(gateway_module, "redact", "redact (arguments; result in _execute)")
    sections.wrap(gateway_module, "_record_request", "_record_request (INSERT + tool.requested)")
    sections.wrap(gateway_module, "effective_policy_of", "effective_policy_of")
    sections.wrap(counters, "increment", "counters.increment (one round trip)")
    sections.wrap(guardrail_services, "effective_policy", "effective_policy")
    sections.wrap(connectors, "run", "connectors.run")
    sections.wrap(audit_services, "change_and_record", "audit.change_and_record (2 events)")
    sections.wrap(audit_services, "build_body", "build_body")
    sections.wrap(audit_services, "change_and_chain", "change_and_chain")
    sections.wrap(
        psycopg.Cursor, "execute", "psycopg execute (all SQL)", lambda _cursor, query, *rest: statement(query)
    )
    sections.wrap(redis.Redis, "execute_command", "redis round trips")
    sections.wrap(redis.client.Pipeline, "execute", "redis round trips")
    return sections, layout


def profile(ids: dict, calls: int) -> int:
    """Where the time goes inside invoke, in this process alone (no worker running): plain
    timings and CPU time, then time per section and per SQL statement, then cProfile; three
    passes of ``calls`` each. Returns how many invokes it made."""
    context = turn_context(ids)
    for _ in range(100):
        invoke(context, TOOL_NAME, {})
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    plain = []
    cpu_before, backend_before = time.process_time(), backend_cpu_seconds(backend)
    for _ in range(calls):
        started = time.perf_counter()
        invoke(context, TOOL_NAME, {})
        plain.append((time.perf_counter() - started) * 1000)
    cpu_ms = (time.process_time() - cpu_before) / calls * 1000
    backend_after = backend_cpu_seconds(backend)
    print(
        f"\nprofile: {calls:,} calls in this process (no benchmark worker running);"
        f" load average {os.getloadavg()[0]:.2f}"
    )
    print(f"  invoke alone    {summary(plain)}")
    if backend_before is not None and backend_after is not None:
        backend_ms = (backend_after - backend_before) / calls * 1000
        print(f"  CPU per call: this process {cpu_ms:.2f} ms, its PostgreSQL backend {backend_ms:.2f} ms")

    sections, layout = _sections()
    total = 0.0
    try:
        for _ in range(calls):
            started = time.perf_counter()
            invoke(context, TOOL_NAME, {})
            total += time.perf_counter() - started
    finally:
        sections.restore()
    print(f"  time per section, inclusive, per call (a second pass: mean invoke {total / calls * 1000:.3f} ms)")
    for depth, label in layout:
        seconds = sections.seconds.get(label, 0.0)
        share = seconds / total * 100
        per_call = sections.calls[label] / calls
        print(
            f"    {'  ' * depth}{label:<{36 - 2 * depth}} {seconds / calls * 1e6:8.0f} µs  {share:5.1f}%  x{per_call:g}"
        )
    top = sum(sections.seconds.get(label, 0.0) for depth, label in layout if depth == 0 and label in TOP_LEVEL)
    print(f"    {'rest of invoke (redact, digest, key, new_call)':<36} {(total - top) / calls * 1e6:8.0f} µs")
    waiting = sections.seconds["psycopg execute (all SQL)"] + sections.seconds["redis round trips"]
    print(
        f"    {'=> outside the driver calls':<36} {(total - waiting) / calls * 1e6:8.0f} µs  "
        f"{(total - waiting) / total * 100:5.1f}%  (ORM, audit body, hashing, Python)"
    )
    print("  SQL statements, per call (psycopg execute: parameter binding, round trip, server time)")
    for label, samples in sorted(sections.detail.items(), key=lambda item: -sum(item[1])):
        print(
            f"    {label:<36} {sum(samples) / calls * 1e6:8.0f} µs  x{len(samples) / calls:g}"
            f"  (p50 {statistics.median(samples) * 1e6:.0f} µs each)"
        )

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        invoke(context, TOOL_NAME, {})
    profiler.disable()
    for order, limit in (("tottime", 25), ("cumulative", 40)):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(order).print_stats(limit)
        body = text.getvalue()
        start = body.find("   ncalls")
        print(f"\n  cProfile, top {limit} by {order} ({calls:,} calls; times include the profiler's own cost):")
        print("\n".join("    " + line for line in body[start:].rstrip().splitlines()))
    return 100 + 3 * calls


# --- Main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000, help="gateway calls in all (default 10000)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--warmup", type=int, default=100, help="calls per worker before timing (default 100)")
    parser.add_argument("--verbose", action="store_true", help="print the SQL and Redis commands of one call")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor (the durable writes alone)")
    parser.add_argument("--keep", action="store_true", help="leave the database in place afterwards")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="then profile N calls in one process")
    parser.add_argument(
        "--unprepared",
        action="store_true",
        help="compare: PREPARED_STATEMENTS off (the gateway's and the chain's statements are planned every time)",
    )
    options = parser.parse_args()
    if options.workers < 1 or options.calls < options.workers:
        parser.error("need at least one worker and one call per worker")

    setup_test_environment()
    if options.unprepared:  # what a deployment behind a pooler in transaction mode sets
        settings.PREPARED_STATEMENTS = False
    cache.clear()  # FLUSHDB of the benchmark's own Redis database
    ok = False
    with throwaway_database(DATABASE_NAME, keep=options.keep) as database_name:
        print(services_line(database_name) + ("; PREPARED_STATEMENTS off" if options.unprepared else ""))
        ids = build_fixture()
        print(
            f"tool {TOOL_NAME} (built-in noop, low risk, read-only), agent in autonomous mode, user with the"
            f" support_agent role and an allow grant; tenant guardrail policy: {TOOL_NAME} {DAILY_LIMIT:,}/person/day"
        )
        context = turn_context(ids)
        count_round_trips(context, options.verbose)
        invokes = 2
        share = options.calls // options.workers
        floor = not options.no_floor
        print(
            f"\n{options.calls:,} gateway calls by {options.workers} worker processes (~{share:,} each, after"
            f" {options.warmup} warm-up calls each), each followed by a direct call of the same no-op tool"
            + (
                f"; in alternating blocks of {BLOCK}, as many floor calls: the same durable writes alone (the call's"
                " row and its tool.requested and tool.executed events, chained, two commits; no read, no decision,"
                " no Redis)"
                if floor
                else ""
            )
        )
        measured = run_workers(ids, options.calls, options.workers, options.warmup, floor)
        invokes += measured["invokes"]
        outcomes = {str(outcome): count for outcome, count in measured["outcomes"].items()}
        print(f"  (load average after {os.getloadavg()[0]:.2f}; outcomes {outcomes})")
        report(measured, options.workers)
        if floor:
            print("\nthe floor")
            report_floor(measured)
        print("\nchecks")
        ok = check(invokes)
        if options.profile:
            invokes += profile(ids, options.profile)
            print("\nchecks after the profile")
            ok = check(invokes) and ok
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
