"""Benchmark: whole turns on real Celery workers, PostgreSQL and Redis, against a model that
answers in a fixed time.

The scripted model server (``tests/model_server.py``) runs in this process and answers every
chat-completions request after ``--latency`` seconds (default 0.05). Its responder counts the
tool results in the request: none -> call knowledge.search, one -> call bench.noop (the
built-in ``noop``), two -> call ticket.create, three -> answer "Done.". The function names are
the engine's own (``apps.runtime.llm.function_names``), checked against the request's
``tools`` list; a name not offered is answered with an error, which fails the turn. So each
turn makes 4 model calls (about 4 x 50 ms of model time) and 3 governed tool calls through
the gateway, besides everything else a turn does: input guardrails, retrieval (one approved
source matches the question), the checkpoints, the trace, the audit events, the decision
layer and the output guardrails.

For each worker count of ``--workers`` (default 1,2): that many Celery worker processes
(``celery -A controlplane worker --pool=prefork --concurrency=1``, as ``make worker`` starts
one but with one pool process each) are started on the benchmark's database and Redis and
pinged until they answer, and the queue is purged. Then ``--turns`` turns (default 1,000), one
per conversation (opened beforehand, not timed), are submitted from this process through
``runtime.services.submit_turn`` as fast as it goes, and the benchmark waits until every one
has finished. The workers are stopped after each run.

Prints per run: throughput (turns / time from the first turn's creation to the last one's
finish, both stamped by the database rows), the model time per turn (``Turn.model_ms``, as the
worker timed its SDK calls), the turn latency (``Turn.latency_ms``: from the worker's claim to
the answer), the governance overhead (latency minus model time) and the queueing delay
(``started_at - created_at``: with every turn submitted at once, the backlog), p50/p95; the
mean overhead by phase of the turn (from the trace's step timestamps), and the time per turn
each worker spends outside any turn's latency. Then the ratio of the two throughputs. Checks
afterwards: every turn completed with decision "answer", on its first attempt, with exactly 3
executed tool calls and 4 model-call steps; the model server received 4 requests per turn;
only this run's workers consumed the queue; the audit events are all there and the chain
verifies.

Runs on its own throwaway database, bench_turns (created and dropped here; ``--keep`` leaves
it), on the server DATABASE_URL names (default postgres://postgres@127.0.0.1:5432/), and Redis
database 12 at redis://127.0.0.1:6379/ as broker, cache and rate-limit store (flushed at the
start; TURNS_BENCH_REDIS_URL names another). The workers' logs go to a temporary directory
(printed with ``--verbose``, kept when a check fails). The machine's load average is printed:
the workers share the CPUs with PostgreSQL, Redis, the model server and the submitting loop.

python bench/turns.py [--turns 1000] [--workers 1,2] [--latency 0.05] [--verbose] [--keep]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import quote

from _support import (
    BENCH_GATE_OVERRIDE,
    REPOSITORY,
    configure,
    percentile,
    platform_admin,
    services_line,
    throwaway_database,
)

configure("turns", redis_variable="TURNS_BENCH_REDIS_URL", redis_url="redis://127.0.0.1:6379/12")

import django  # noqa: E402 — settings come from the environment set above

django.setup()

from django.conf import settings  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from apps import audit  # noqa: E402
from apps.runtime.choices import FINISHED_STATUSES, Decision, StepKind, TurnStatus  # noqa: E402
from apps.runtime.llm import function_names  # noqa: E402
from apps.runtime.models import Step, Turn  # noqa: E402
from apps.tools.choices import Outcome  # noqa: E402
from apps.tools.models import ToolCall  # noqa: E402
from controlplane.celery import app as celery_app  # noqa: E402
from tests.model_server import ScriptedModelServer, call, error, reply, tool_calls  # noqa: E402

DATABASE_NAME = "bench_turns"
MODEL_NAME = "bench-model"
QUESTION = "How many days do I have to return an unused item, and can you open a ticket for my return?"
# The three tools, in the order the scripted model calls them, with the arguments it sends.
PLAN = (
    ("knowledge.search", {"query": "return window for unused items"}),
    ("bench.noop", {}),
    ("ticket.create", {"title": "Customer asked about returning an unused item", "priority": "low"}),
)
MODEL_CALLS_PER_TURN = len(PLAN) + 1
# The shipped guardrail policy allows one person 20 messages a minute and 200 calls of a tool a
# day; the benchmark's one user sends thousands. A tenant policy raises both (the checks and
# their counters still run).
LIMIT = 10_000_000
POLICY_DOCUMENT = f"rate_limits:\n  per_user_per_minute: {LIMIT}\n  per_tool_per_user_per_day:\n    default: {LIMIT}\n"
WORKER_PREFIX = f"bench-turns-{os.getpid()}-"
POLL_SECONDS = 0.5
PROGRESS_SECONDS = 10.0
# A model call's p50, as the worker times it, may exceed the scripted latency by this much
# (the SDK, the HTTP round trip on loopback, a busy CPU) before the run counts as not measuring
# the intended model.
MODEL_CALL_SLACK_MS = 25.0
STALL_SECONDS = 180.0  # no turn finished for this long: something is wrong, stop waiting


# --- Setup --------------------------------------------------------------------------------


def build_fixture(base_url: str) -> dict:
    """Tenant, owner (admin, agent owner, knowledge owner), support user, a provider on the
    scripted server, an autonomous agent on it, the three built-in tools on its allowlist and
    granted to support agents, one approved knowledge source, and a policy raising the
    limits; made through the services production uses (the provider directly: it has none)."""
    from apps.accounts.choices import RoleKind
    from apps.accounts.models import Role, User
    from apps.accounts.services import assign_role, create_tenant
    from apps.agents.choices import RolloutMode
    from apps.agents.models import ModelProvider
    from apps.agents.services import create_agent
    from apps.guardrails.services import activate_policy, save_policy
    from apps.knowledge.services import approve_source, create_source
    from apps.tools.builtins import SCHEMAS
    from apps.tools.choices import ConnectorKind, Effect, RiskTier
    from apps.tools.services import allow_tool, create_grant, save_tool

    tenant = create_tenant(name="Bench turns", slug="benchturns")
    roles = {role.kind: role for role in Role.objects.filter(tenant=tenant)}
    owner = User.objects.create_user(username="bench-owner", password="bench-password")
    for kind in (RoleKind.ADMIN, RoleKind.AGENT_OWNER, RoleKind.KNOWLEDGE_OWNER):
        assign_role(user=owner, role=roles[kind])
    user = User.objects.create_user(username="bench-support", password="bench-password")
    assign_role(user=user, role=roles[RoleKind.SUPPORT_AGENT])
    provider = ModelProvider(
        tenant=tenant,
        name="Scripted (benchmark)",
        base_url=base_url,
        api_key_env_var="",  # the workers read no key: the scripted server takes any
        model_names=[MODEL_NAME],
        timeout_seconds=30,
        max_retries=0,  # a failed call fails the turn (and the checks), never a silent retry
    )
    provider.full_clean()
    provider.save()
    agent = create_agent(
        by=platform_admin(),
        gate_override=BENCH_GATE_OVERRIDE,
        tenant=tenant,
        name="Bench agent",
        slug="bench-agent",
        purpose="Answers with three tool calls for the turns benchmark.",
        owner=owner,
        channels=["web_chat"],
        rollout_mode=RolloutMode.AUTONOMOUS,
        model_provider=provider,
        model_name=MODEL_NAME,
    )
    tools = (
        ("knowledge.search", "knowledge.search", "Search the approved knowledge base.", False),
        ("bench.noop", "noop", "Does nothing (turns benchmark).", False),
        ("ticket.create", "ticket.create", "Open an internal ticket for the support team.", True),
    )
    for name, builtin, description, writes in tools:
        tool = save_tool(
            by=owner,
            tenant=tenant,
            name=name,
            description=description,
            argument_schema=SCHEMAS[builtin],
            risk_tier=RiskTier.LOW,
            writes=writes,
            connector=ConnectorKind.BUILTIN,
            builtin=builtin,
        )
        allow_tool(agent=agent, tool=tool, by=owner, reason="benchmark")
        create_grant(by=owner, role=roles[RoleKind.SUPPORT_AGENT], tool=tool, effect=Effect.ALLOW, note="benchmark")
    source = create_source(
        by=owner,
        tenant=tenant,
        title="Returns policy",
        owner=owner,
        body="Returns policy. Unused items can be returned within 30 days of delivery for a full refund. "
        "Open a ticket when a customer asks for a return label.",
        visibility="public",
    )
    approve_source(source=source, by=owner)
    policy = save_policy(document=POLICY_DOCUMENT, by=owner, tenant=tenant, change_note="benchmark volume")
    activate_policy(policy=policy, by=owner, reason="benchmark volume")
    return {"tenant": tenant, "agent": agent, "user": user}


class Responder:
    """The scripted model: the next tool of PLAN while tool results are missing, then the answer."""

    def __init__(self):
        self.function_of = function_names(name for name, _arguments in PLAN)

    def __call__(self, body: dict):
        offered = {tool["function"]["name"] for tool in body.get("tools") or () if "function" in tool}
        done = sum(1 for message in body.get("messages") or () if message.get("role") == "tool")
        if done >= len(PLAN):
            return reply("Done.")
        name, arguments = PLAN[done]
        function = self.function_of[name]
        if function not in offered:
            return error(400, f"benchmark: {function} ({name}) is not among the offered tools {sorted(offered)}")
        return tool_calls(call(function, arguments))


def worker_database_url() -> str:
    """The benchmark database (created by now), as a DATABASE_URL for the worker processes."""
    database = connection.settings_dict
    credentials = quote(database["USER"] or "")
    if database.get("PASSWORD"):
        credentials += ":" + quote(database["PASSWORD"])
    host = database.get("HOST") or "127.0.0.1"
    port = database.get("PORT") or "5432"
    return f"postgres://{credentials}@{host}:{port}/{database['NAME']}"


# --- Workers --------------------------------------------------------------------------------


def worker_command(index: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "controlplane",
        "worker",
        "--pool=prefork",
        "--concurrency=1",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        f"--hostname={WORKER_PREFIX}{index}@%h",
    ]


def start_workers(count: int, database_url: str, log_dir: Path, run_label: str) -> list[tuple]:
    environment = {**os.environ, "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    workers = []
    for index in range(count):
        log_path = log_dir / f"{run_label}-worker-{index}.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(  # noqa: S603 — fixed argument list, no shell
                worker_command(index), cwd=REPOSITORY, env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        workers.append((process, log_path))
    return workers


def answering() -> list[str]:
    return sorted(name for answer in celery_app.control.ping(timeout=0.5) or [] for name in answer)


def wait_until_answering(workers: list[tuple]) -> list[str]:
    """Every worker answers a ping; the names of all that answered (others would share the queue)."""
    deadline = time.monotonic() + 90
    while True:
        names = answering()
        if sum(name.startswith(WORKER_PREFIX) for name in names) == len(workers):
            return names
        dead = [log for process, log in workers if process.poll() is not None]
        if dead or time.monotonic() > deadline:
            log = dead[0] if dead else workers[0][1]
            raise SystemExit(f"a Celery worker did not start; {log}:\n{log.read_text(errors='replace')[-3000:]}")


def stop_workers(workers: list[tuple]) -> None:
    for process, _log in workers:
        if process.poll() is None:
            process.terminate()  # warm shutdown
    for process, _log in workers:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# --- Measuring ----------------------------------------------------------------------------


def p50_p95(samples: list[float], unit: str = "ms", digits: int = 1) -> str:
    return (
        f"p50 {statistics.median(samples):,.{digits}f} {unit}  p95 {percentile(samples, 0.95):,.{digits}f} {unit}"
        f"  mean {statistics.mean(samples):,.{digits}f} {unit}  max {max(samples):,.{digits}f} {unit}"
    )


def database_counters() -> dict[str, int]:
    """The benchmark database's cumulative statistics (every process's sessions on it)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")  # this process's own counts, too
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
        row = cursor.fetchone()
    return dict(zip(("commits", "inserted", "updated", "deleted"), row, strict=True))


def wait_for_turns(turn_ids: list, workers: list[tuple], label: str, timeout: float) -> None:
    """Poll until every turn has finished; progress on stderr every ~10 s."""
    began = last_progress = last_change = time.monotonic()
    remaining_before = None
    while True:
        remaining = Turn.objects.filter(pk__in=turn_ids).exclude(status__in=FINISHED_STATUSES).count()
        now = time.monotonic()
        if remaining == 0:
            return
        if remaining != remaining_before:
            remaining_before, last_change = remaining, now
        if now - last_progress >= PROGRESS_SECONDS:
            finished = len(turn_ids) - remaining
            print(f"  {label}: {finished:,}/{len(turn_ids):,} finished, {now - began:.0f} s", file=sys.stderr)
            last_progress = now
        dead = [log for process, log in workers if process.poll() is not None]
        if dead:
            raise SystemExit(
                f"a worker exited during the run; {dead[0]}:\n{dead[0].read_text(errors='replace')[-3000:]}"
            )
        if now - began > timeout or now - last_change > STALL_SECONDS:
            log = workers[0][1]
            raise SystemExit(
                f"{remaining:,} turn(s) still unfinished after {now - began:.0f} s"
                f" ({now - last_change:.0f} s without progress); {log}:\n{log.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(POLL_SECONDS)


def phases(turn: dict, steps: list[dict]) -> dict[str, float] | None:
    """The overhead of one turn by phase, from its trace: time between step rows, minus the
    model time of the model-call steps inside it. None when the trace is not the expected one."""
    models = [step for step in steps if step["kind"] == StepKind.MODEL_CALL]
    tools = [step for step in steps if step["kind"] == StepKind.TOOL_CALL]
    guarded = next((step for step in steps if step["kind"] == StepKind.GUARDRAIL_INPUT), None)
    retrieved = next((step for step in steps if step["kind"] == StepKind.RETRIEVAL), None)
    if len(models) != MODEL_CALLS_PER_TURN or len(tools) != len(PLAN) or guarded is None or retrieved is None:
        return None

    def ms(later, earlier) -> float:
        return (later - earlier).total_seconds() * 1000

    result = {
        "claim -> input guardrails": ms(guarded["created_at"], turn["started_at"]),
        "input guardrails -> retrieval": ms(retrieved["created_at"], guarded["created_at"]),
        "retrieval -> 1st model call": ms(models[0]["created_at"], retrieved["created_at"]) - models[0]["latency_ms"],
    }
    result["model reply -> tool result (x3)"] = sum(
        ms(tool["created_at"], model["created_at"]) for model, tool in zip(models, tools, strict=False)
    )
    result["tool result -> next model call (x3)"] = sum(
        ms(model["created_at"], tool["created_at"]) - model["latency_ms"]
        for tool, model in zip(tools, models[1:], strict=True)
    )
    result["last model reply -> finished"] = ms(turn["finished_at"], models[-1]["created_at"])
    return result


PHASE_NOTES = {
    "claim -> input guardrails": "load the turn, run check, input guardrails and their counter, step",
    "input guardrails -> retrieval": "retrieval query, step",
    "retrieval -> 1st model call": "knowledge.retrieved event, triggers, tools offered, prompt, checkpoint, run check",
    "model reply -> tool result (x3)": "model step, model.called event, checkpoint, gateway.invoke, tool step",
    "tool result -> next model call (x3)": "checkpoint, limits, run check, the SDK around the model's 50 ms",
    "last model reply -> finished": "model step and event, decision, output guardrails, decision step, save",
}


def run(fixture: dict, server: ScriptedModelServer, workers: int, turns: int, log_dir: Path, verbose: bool) -> dict:
    from apps.runtime.services import open_conversation, submit_turn

    label = f"{workers} worker{'s' if workers > 1 else ''}"
    agent, user = fixture["agent"], fixture["user"]
    conversations = [
        open_conversation(
            actor=user, agent=agent, channel="web_chat", subject=f"C-{index:05d}", subject_verified=True, region="us"
        )
        for index in range(turns)
    ]
    started = start_workers(workers, worker_database_url(), log_dir, f"run-{workers}")
    try:
        names = wait_until_answering(started)
        celery_app.control.purge()
        database_before = database_counters()
        requests_before = len(server.requests)
        load_before = os.getloadavg()[0]
        began = time.monotonic()
        turn_ids = [submit_turn(conversation=each, actor=user, text=QUESTION).pk for each in conversations]
        submitted = time.monotonic() - began
        wait_for_turns(turn_ids, started, label, timeout=300 + 2.0 * turns)
        waited = time.monotonic() - began
        requests = len(server.requests) - requests_before
        load_after = os.getloadavg()[0]
    finally:
        stop_workers(started)  # before reading the statistics: a backend reports its own as it exits
    database_after = database_counters()
    database = {name: database_after[name] - database_before[name] for name in database_after}

    rows = list(
        Turn.objects.filter(pk__in=turn_ids).values(
            "pk", "status", "decision", "attempts", "created_at", "started_at", "finished_at", "latency_ms", "model_ms"
        )
    )
    steps_of: dict = defaultdict(list)
    for step in (
        Step.objects.filter(turn_id__in=turn_ids)
        .order_by("turn_id", "number")
        .values("turn_id", "number", "kind", "created_at", "latency_ms")
    ):
        steps_of[step["turn_id"]].append(step)
    calls_of: dict = defaultdict(Counter)
    for turn_id, outcome in ToolCall.objects.filter(turn_id__in=[str(pk) for pk in turn_ids]).values_list(
        "turn_id", "outcome"
    ):
        calls_of[turn_id][outcome] += 1
    return {
        "label": label,
        "workers": workers,
        "names": names,
        "logs": [log for _process, log in started],
        "turn_ids": turn_ids,
        "rows": rows,
        "steps": steps_of,
        "calls": calls_of,
        "requests": requests,
        "submitted": submitted,
        "waited": waited,
        "load": (load_before, load_after),
        "verbose": verbose,
        "latency": server.latency,
        "database": database,
    }


def report(measured: dict, latency: float) -> float:
    """Print one run; returns its throughput (turns/s)."""
    rows = measured["rows"]
    finished = [row for row in rows if row["finished_at"] and row["started_at"] and row["latency_ms"] is not None]
    turns = len(measured["turn_ids"])
    if not finished:
        print("  no turn finished with a latency: nothing to report")
        return 0.0
    first_created = min(row["created_at"] for row in rows)
    last_finished = max(row["finished_at"] for row in finished)
    wall = (last_finished - first_created).total_seconds()
    throughput = turns / wall
    model = [row["model_ms"] for row in finished]
    latencies = [row["latency_ms"] for row in finished]
    overhead = [row["latency_ms"] - row["model_ms"] for row in finished]
    queueing = [(row["started_at"] - row["created_at"]).total_seconds() for row in finished]
    print(
        f"  submitted in {measured['submitted']:.1f} s ({turns / measured['submitted']:,.0f} turns/s from this"
        f" process); the last finished {wall:.1f} s after the first was created"
        f" (load average {measured['load'][0]:.2f} before, {measured['load'][1]:.2f} after)"
    )
    print(f"  throughput: {throughput:.2f} turns/s ({turns:,} turns in {wall:.1f} s, {measured['label']})")
    print(
        f"  model time per turn        {p50_p95(model)}"
        f"  ({MODEL_CALLS_PER_TURN} calls of {latency * 1000:g} ms, as the worker timed its SDK calls)"
    )
    print(f"  turn latency               {p50_p95(latencies)}  (claim to answer)")
    print(f"  governance overhead        {p50_p95(overhead)}  (turn latency minus model time)")
    print(f"  queueing delay             {p50_p95(queueing, 's', 2)}  (created to claimed: the backlog)")
    by_phase: dict[str, list[float]] = defaultdict(list)
    for row in finished:
        split = phases(row, measured["steps"].get(row["pk"], []))
        if split is not None:
            for name, value in split.items():
                by_phase[name].append(value)
    if by_phase:
        traced = len(next(iter(by_phase.values())))
        print(f"  overhead by phase, mean per turn (from the trace's step timestamps, {traced:,} turns):")
        for name, values in by_phase.items():
            print(f"    {name:<38} {statistics.mean(values):7.1f} ms  ({PHASE_NOTES[name]})")
    database = {name: value / turns for name, value in measured["database"].items()}
    print(
        f"  database work per turn: {database['commits']:.1f} transactions committed, rows {database['inserted']:.1f}"
        f" inserted, {database['updated']:.1f} updated, {database['deleted']:.1f} deleted (every session on"
        " the database during the run: the workers, and this process's submits and polls)"
    )
    busy = measured["workers"] * wall / turns * 1000
    outside = busy - statistics.mean(latencies)
    print(
        f"  per turn, each worker is busy {busy:.1f} ms (workers x wall time / turns), of which {outside:.1f} ms is"
        " outside the turn's latency (Celery delivery and ack, the task's database connection,"
        " the claim, the turn.completed event)"
    )
    if measured["verbose"]:
        print(f"  workers answering the ping: {', '.join(measured['names'])}")
        print(f"  worker command: {' '.join(worker_command(0))}")
        print(f"  worker logs: {', '.join(str(log) for log in measured['logs'])}")
        for name, values in by_phase.items():
            print(f"    {name:<38} {p50_p95(values)}")
        sample = next((row for row in finished if measured["steps"].get(row["pk"])), None)
        if sample is not None:
            print(f"  one turn's trace ({sample['pk']}), ms after its claim:")
            for step in measured["steps"][sample["pk"]]:
                offset = (step["created_at"] - sample["started_at"]).total_seconds() * 1000
                took = f"  ({step['latency_ms']:.1f} ms)" if step["latency_ms"] is not None else ""
                print(f"    {offset:8.1f}  {step['number']:2}. {step['kind']}{took}")
            print(f"    {sample['latency_ms']:8.1f}  finished")
    return throughput


# --- Checks --------------------------------------------------------------------------------


def run_checks(measured: dict) -> list[tuple[str, bool]]:
    label, rows, turns = measured["label"], measured["rows"], len(measured["turn_ids"])
    ends = Counter((row["status"], row["decision"]) for row in rows)
    attempts = Counter(row["attempts"] for row in rows)
    tool_counts = Counter(
        tuple(sorted(measured["calls"].get(str(row["pk"]), Counter()).items())) for row in rows
    )  # per turn: its tool calls by outcome
    step_counts = Counter(
        (
            sum(step["kind"] == StepKind.MODEL_CALL for step in measured["steps"].get(row["pk"], [])),
            sum(step["kind"] == StepKind.TOOL_CALL for step in measured["steps"].get(row["pk"], [])),
        )
        for row in rows
    )
    others = [name for name in measured["names"] if not name.startswith(WORKER_PREFIX)]
    per_call = [
        step["latency_ms"]
        for steps in measured["steps"].values()
        for step in steps
        if step["kind"] == StepKind.MODEL_CALL and step["latency_ms"] is not None
    ]
    per_call_p50 = statistics.median(per_call) if per_call else float("nan")
    answer_ms = measured["latency"] * 1000
    expected_requests = MODEL_CALLS_PER_TURN * turns
    return [
        (
            f"{label}: every turn completed with decision answer ({dict(ends)})",
            len(rows) == turns and ends == {(TurnStatus.COMPLETED, Decision.ANSWER): turns},
        ),
        (f"{label}: every turn ran on its first attempt ({dict(attempts)})", attempts == {1: turns}),
        (
            f"{label}: every turn has exactly 3 tool calls, all executed ({dict(tool_counts)})",
            tool_counts == {((Outcome.EXECUTED, len(PLAN)),): turns},
        ),
        (
            f"{label}: every turn has 4 model_call and 3 tool_call steps ({dict(step_counts)})",
            step_counts == {(MODEL_CALLS_PER_TURN, len(PLAN)): turns},
        ),
        (
            f"{label}: the model server received 4 requests per turn ({measured['requests']:,} =="
            f" {expected_requests:,})",
            measured["requests"] == expected_requests,
        ),
        (f"{label}: only this run's workers consumed the queue (others: {others or 'none'})", not others),
        (
            f"{label}: a model call took about the model's {answer_ms:g} ms as the worker timed it"
            f" (p50 {per_call_p50:.1f} ms, allowed up to {answer_ms + MODEL_CALL_SLACK_MS:g} ms)",
            answer_ms <= per_call_p50 <= answer_ms + MODEL_CALL_SLACK_MS,
        ),
    ]


def audit_checks(total_turns: int) -> list[tuple[str, bool]]:
    from apps.audit.chain import chain_pending, verify_chain
    from apps.audit.models import AuditEvent, PendingEvent

    chain_pending(wait=True)
    verified = verify_chain()
    pending = PendingEvent.objects.count()
    counts = dict(
        Counter(
            AuditEvent.objects.filter(
                event_type__in=[
                    audit.EventType.TURN_RECEIVED,
                    audit.EventType.TURN_COMPLETED,
                    audit.EventType.MODEL_CALLED,
                    audit.EventType.TOOL_EXECUTED,
                ]
            ).values_list("event_type", flat=True)
        )
    )
    expected = {
        audit.EventType.TURN_RECEIVED: total_turns,
        audit.EventType.TURN_COMPLETED: total_turns,
        audit.EventType.MODEL_CALLED: MODEL_CALLS_PER_TURN * total_turns,
        audit.EventType.TOOL_EXECUTED: len(PLAN) * total_turns,
    }
    shown = ", ".join(f"{kind} {counts.get(kind, 0):,}/{number:,}" for kind, number in expected.items())
    return [
        (f"audit events per turn all there ({shown})", all(counts.get(k) == n for k, n in expected.items())),
        (f"audit chain verifies: {verified.summary()}", verified.ok and pending == 0),
    ]


def print_ratios(throughputs: dict[int, float]) -> None:
    """Each run's throughput against the run with the fewest workers."""
    if len(throughputs) < 2:
        return
    print()
    base = min(throughputs)
    for workers, throughput in throughputs.items():
        if workers != base and throughputs[base]:
            print(
                f"throughput {workers} workers / {base} worker{'s' if base > 1 else ''}:"
                f" {throughput / throughputs[base]:.2f}x ({throughput:.2f} / {throughputs[base]:.2f} turns/s)"
            )


# --- Main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=1_000, help="turns per run (default 1000)")
    parser.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated (default 1,2)")
    parser.add_argument("--latency", type=float, default=0.05, help="the model's answer time in s (default 0.05)")
    parser.add_argument("--verbose", action="store_true", help="the workers, their logs, phases and one trace")
    parser.add_argument("--keep", action="store_true", help="leave the database in place afterwards")
    options = parser.parse_args()
    try:
        worker_counts = [int(part) for part in options.workers.split(",") if part.strip()]
    except ValueError:
        parser.error("--workers takes comma-separated numbers, e.g. 1,2")
    if options.turns < 1 or not worker_counts or min(worker_counts) < 1 or options.latency < 0:
        parser.error("need at least one turn, worker counts of 1 or more and a latency of 0 or more")

    setup_test_environment()
    cache.clear()  # FLUSHDB of the benchmark's own Redis database (the broker's queue too)
    log_dir = Path(tempfile.mkdtemp(prefix="turns-bench-workers-"))
    ok = False
    with throwaway_database(DATABASE_NAME, keep=options.keep) as database_name:
        server = ScriptedModelServer(responder=Responder(), latency=options.latency).start()
        try:
            print(services_line(database_name) + f"; CONN_MAX_AGE {settings.DATABASES['default']['CONN_MAX_AGE']}")
            fixture = build_fixture(server.base_url)
            print(
                f"model: scripted server in this process ({server.base_url}), every answer after"
                f" {options.latency * 1000:g} ms; a turn = {MODEL_CALLS_PER_TURN} model calls +"
                f" {len(PLAN)} tool calls ({', '.join(name for name, _arguments in PLAN)}: built-ins, low risk),"
                " agent in autonomous mode, user with the support_agent role and allow grants,"
                " one approved knowledge source; tenant guardrail policy raises the per-user limits"
            )
            throughputs: dict[int, float] = {}
            checks: list[tuple[str, bool]] = []
            for workers in worker_counts:
                print(
                    f"\n{workers} Celery worker process{'es' if workers > 1 else ''} (prefork, concurrency 1):"
                    f" {options.turns:,} turns, one per conversation, submitted at once"
                )
                measured = run(fixture, server, workers, options.turns, log_dir, options.verbose)
                throughputs[workers] = report(measured, options.latency)
                checks += run_checks(measured)
            print_ratios(throughputs)
            print("\nchecks")
            checks += audit_checks(options.turns * len(worker_counts))
            for label, passed in checks:
                print(f"  [{'ok' if passed else 'FAILED'}] {label}")
            ok = all(passed for _label, passed in checks)
        finally:
            server.stop()
            if ok:
                shutil.rmtree(log_dir, ignore_errors=True)
            else:
                print(f"\nworker logs kept in {log_dir}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
