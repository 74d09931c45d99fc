"""Benchmark: the governance dashboard (GET /) of a tenant with 50,000 turns.

Two tenants set up alike (an admin who sees every panel, agents with owners, tools on their
allowlists and role grants): the large one holds 50,000 real turns (and 10,000 turns of
evaluation runs, which the page must leave out), 5,000 handoffs, 2,000 tool calls, 500
knowledge sources, 2,000 approval requests, 1,000 reviews, 1,000 guardrail kills, 200
knowledge gaps and 20 agents with 5 evaluation runs each; the small one a hundredth of that
(2 agents). Rows are spread over the last 100 days, so the 7, 30 and 90-day periods read
about 7%, 30% and 90% of them. Each tenant's admin is signed in (``force_login``) and the
page is fetched with Django's test client, through the whole middleware stack and the
templates as production renders them (DEBUG off). Per tenant, interleaved, after a warm-up:

- the default page (30 days);
- ``?days=7`` and ``?days=90``;
- the htmx body swap (``?days=90`` with ``HX-Request: true`` and ``HX-Target: dashboard-body``).

Prints p50/p95 per variant and over all renders, the queries of one render of each (counted
with CaptureQueriesContext), both tenants' query counts side by side with whether they are
independent of the number of rows, the p95 ratio large/small, and the target check: p95 of
all renders of the large tenant under 300 ms. Before timing, the page is checked to show the
right number of finished turns (so evaluation turns were left out) and every chart.

Runs on its own throwaway database, bench_dashboard (created and dropped here; ``--keep``
leaves it), on the server DATABASE_URL names (default postgres://postgres@127.0.0.1:5432/),
and Redis database 11 at redis://127.0.0.1:6379/ (flushed at the start;
DASHBOARD_BENCH_REDIS_URL names another). About a minute.

python bench/dashboard.py [--renders 40] [--verbose] [--keep]
"""

import argparse
import datetime
import random
import time
import uuid
from contextlib import contextmanager
from decimal import Decimal

from _support import (
    configure,
    count_queries,
    fetch,
    p50_p95,
    percentile,
    services_line,
    setup_for_pages,
    throwaway_database,
)

configure("dashboard", redis_variable="DASHBOARD_BENCH_REDIS_URL", redis_url="redis://127.0.0.1:6379/11")
setup_for_pages()  # django.setup() for pages fetched with the test client

from django.core.cache import cache  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

DATABASE_NAME = "bench_dashboard"
TARGET_P95_MS = 300.0
WARMUP = 5
BATCH = 2_000
SPREAD_DAYS = 100
LARGE = {
    "label": "large",
    "agents": 20,
    "turns": 50_000,
    "evaluation_turns": 10_000,
    "handoffs": 5_000,
    "tool_calls": 2_000,
    "sources": 500,
    "approvals": 2_000,
    "reviews": 1_000,
    "kills": 1_000,
    "gaps": 200,
    "runs_per_agent": 5,
}
SMALL = {key: (value if key in ("label", "runs_per_agent") else max(1, value // 100)) for key, value in LARGE.items()}
SMALL.update(label="small", agents=2)
HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "dashboard-body"}
VARIANTS = (
    ("default (30 days)", "/", {}),
    ("7 days", "/?days=7", {}),
    ("90 days", "/?days=90", {}),
    ("htmx body (90 days)", "/?days=90", HTMX),
)
DECISIONS = (  # decision, reason, share of real turns
    ("answer", "grounded", 0.55),
    ("answer", "tool_result", 0.10),
    ("clarify", "weak_match", 0.08),
    ("fallback", "knowledge_gap", 0.12),
    ("fallback", "ungrounded", 0.05),
    ("escalate", "human_request", 0.07),
    ("refuse", "guardrail_kill", 0.03),
)
REASON_CODES = ("human_request", "topic", "negative_sentiment", "repeated_failure", "low_confidence")
CATEGORIES = ("grounding", "fallback", "freshness", "conflict", "compliance", "pii", "injection", "escalation")


@contextmanager
def explicit_created_at(*models):
    """Let bulk_create keep the ``created_at`` given (the field adds "now" on insert), so rows
    can be spread over the past as real traffic would be."""
    fields = [model._meta.get_field("created_at") for model in models]
    for field in fields:
        field.auto_now_add = False
    try:
        yield
    finally:
        for field in fields:
            field.auto_now_add = True


# --- Setup --------------------------------------------------------------------------------


def build_tenant(number: int, size: dict) -> dict:
    """A tenant, its people, agents, tools, allowlists and grants (through the services
    production uses), then the traffic in bulk."""
    from apps.accounts.choices import RoleKind
    from apps.accounts.models import Role, User
    from apps.accounts.services import assign_role, create_tenant
    from apps.agents.services import create_agent
    from apps.tools.choices import ConnectorKind, Effect, RiskTier
    from apps.tools.services import allow_tool, create_grant, save_tool

    tenant = create_tenant(name=f"Bench dashboard {size['label']}", slug=f"benchdashboard{number}")
    roles = {role.kind: role for role in Role.objects.filter(tenant=tenant)}

    def person(username: str, display_name: str, *kinds: str) -> User:
        user = User.objects.create_user(
            username=f"{username}-{number}", password="bench-password", display_name=display_name
        )
        for kind in kinds:
            assign_role(user=user, role=roles[kind])
        return user

    admin = person("admin", "Ada Admin", RoleKind.ADMIN, RoleKind.AGENT_OWNER, RoleKind.KNOWLEDGE_OWNER)
    owners = [person(f"owner{index}", f"Owner {index}", RoleKind.KNOWLEDGE_OWNER) for index in range(5)]
    support = person("support", "Sasha Support", RoleKind.SUPPORT_AGENT)
    agents = [
        create_agent(
            by=admin,
            tenant=tenant,
            name=f"Agent {index:02d}",
            slug=f"agent-{index:02d}",
            purpose="Answers customers (dashboard benchmark).",
            owner=admin,
            channels=["web_chat"],
        )
        for index in range(size["agents"])
    ]
    tools = []
    for index in range(4):
        tool = save_tool(
            by=admin,
            tenant=tenant,
            name=f"orders.action{index}",
            description="A tool of the dashboard benchmark; never run.",
            argument_schema={"type": "object", "properties": {}, "additionalProperties": False},
            risk_tier=RiskTier.LOW,
            connector=ConnectorKind.BUILTIN,
            builtin="noop",
        )
        tools.append(tool)
        create_grant(by=admin, role=roles[RoleKind.SUPPORT_AGENT], tool=tool, effect=Effect.ALLOW)
        for agent in agents:
            allow_tool(agent=agent, tool=tool, by=admin, reason="benchmark")
    rng = random.Random(number)
    counts = seed_traffic(tenant, agents, tools, admin, support, owners, size, rng)
    return {"tenant": tenant, "admin": admin, "size": size, **counts}


def moment(rng: random.Random, now: datetime.datetime) -> datetime.datetime:
    return now - datetime.timedelta(seconds=rng.uniform(60, SPREAD_DAYS * 86_400))


def seed_traffic(tenant, agents, tools, admin, support, owners, size, rng) -> dict:
    from apps.approvals.models import ApprovalRequest
    from apps.evals.models import EvalRun, EvalSuite, TurnReview
    from apps.guardrails.models import KillVerdict
    from apps.handoffs.models import Handoff
    from apps.knowledge.models import KnowledgeGap, KnowledgeSource
    from apps.runtime.models import Conversation, Turn
    from apps.tools.models import ToolCall

    now = timezone.now()
    real_turns = []

    def conversations_and_turns(count: int, evaluation: bool) -> list:
        made = []
        per_conversation = 4
        conversations = Conversation.objects.bulk_create(
            [
                Conversation(
                    tenant=tenant,
                    agent=agents[index % len(agents)],
                    actor=support,
                    channel="web_chat",
                    subject=f"C-{index:06d}",
                    evaluation=evaluation,
                )
                for index in range((count + per_conversation - 1) // per_conversation)
            ],
            batch_size=BATCH,
        )
        weights = [share for _decision, _reason, share in DECISIONS]
        rows = []
        for index in range(count):
            conversation = conversations[index // per_conversation]
            decision, reason, _share = rng.choices(DECISIONS, weights)[0]
            received = moment(rng, now)
            rows.append(
                Turn(
                    conversation=conversation,
                    tenant=tenant,
                    agent_id=conversation.agent_id,
                    actor=support,
                    number=index % per_conversation + 1,
                    input="Where is my order?",
                    status="completed",
                    decision=decision,
                    decision_reason=reason,
                    output="Your order ships tomorrow [S1].",
                    model="offline",
                    created_at=received,
                    started_at=received + datetime.timedelta(seconds=1),
                    finished_at=received + datetime.timedelta(seconds=3),
                )
            )
        with explicit_created_at(Turn):
            made = Turn.objects.bulk_create(rows, batch_size=BATCH)
        return made

    real_turns = conversations_and_turns(size["turns"], evaluation=False)
    conversations_and_turns(size["evaluation_turns"], evaluation=True)

    with explicit_created_at(Handoff, ToolCall, ApprovalRequest):
        Handoff.objects.bulk_create(
            [
                Handoff(
                    tenant=tenant,
                    agent=agents[index % len(agents)],
                    subject=f"C-{index:06d}",
                    channel="web_chat",
                    reason_code=REASON_CODES[index % len(REASON_CODES)],
                    reason="The customer asked for a person.",
                    summary="Customer wants a person.",
                    status="resolved" if index % 3 else "open",
                    created_at=moment(rng, now),
                )
                for index in range(size["handoffs"])
            ],
            batch_size=BATCH,
        )
        outcomes = ("executed",) * 12 + ("failed",) * 2 + ("denied", "proposed", "needs_approval")
        ToolCall.objects.bulk_create(
            [
                ToolCall(
                    idempotency_key=uuid.uuid4().hex,
                    tenant=tenant,
                    agent=agents[index % len(agents)],
                    tool=tools[index % len(tools)],
                    tool_name=tools[index % len(tools)].name,
                    user=support,
                    action_digest=f"{rng.getrandbits(256):064x}",
                    outcome=rng.choice(outcomes),
                    created_at=moment(rng, now),
                )
                for index in range(size["tool_calls"])
            ],
            batch_size=BATCH,
        )
        approvals = []
        for index in range(size["approvals"]):
            created = moment(rng, now)
            pending = index % 10 == 0  # a tenth still waiting, the rest decided (a sixth of those rejected)
            if pending:
                created = now - datetime.timedelta(minutes=rng.uniform(1, 100))
            due = created + datetime.timedelta(minutes=60)
            approvals.append(
                ApprovalRequest(
                    tenant=tenant,
                    agent=agents[index % len(agents)],
                    tool_call_id=uuid.uuid4(),
                    tool_name=tools[0].name,
                    risk_tier="high",
                    action_digest=f"{rng.getrandbits(256):064x}",
                    requested_by=support,
                    rule="risk_tier",
                    rule_text="High-risk tools need a person.",
                    status="pending" if pending else ("rejected" if index % 6 == 1 else "executed"),
                    created_at=created,
                    due_at=due,
                    expires_at=due + datetime.timedelta(minutes=30),
                    decided_at=None if pending else created + datetime.timedelta(minutes=rng.uniform(1, 50)),
                )
            )
        ApprovalRequest.objects.bulk_create(approvals, batch_size=BATCH)

    kinds = (("shadow", "agreed"), ("suggestion", "accepted"), ("post_hoc", "correct"))
    TurnReview.objects.bulk_create(
        [
            TurnReview(
                tenant=tenant,
                agent_id=turn.agent_id,
                turn=turn,
                kind=kinds[index % 3][0],
                agent_action="answer",
                reviewed_by=admin,
                reviewed_at=turn.finished_at + datetime.timedelta(hours=1),
                **{kinds[index % 3][1]: rng.random() > 0.15},
            )
            for index, turn in enumerate(rng.sample(real_turns, size["reviews"]))
        ],
        batch_size=BATCH,
    )
    KillVerdict.objects.bulk_create(
        [
            KillVerdict(
                tenant=tenant,
                user=support,
                rule=rng.choice(("injection.ignore_previous", "pii.card_number")),
                created_at=moment(rng, now),
            )
            for _ in range(size["kills"])
        ],
        batch_size=BATCH,
    )
    KnowledgeGap.objects.bulk_create(
        [
            KnowledgeGap(
                tenant=tenant,
                topic=f"topic {index}",
                example_query=f"What about topic {index}?",
                occurrences=rng.randint(1, 40),
                last_seen=moment(rng, now),
            )
            for index in range(size["gaps"])
        ],
        batch_size=BATCH,
    )
    today = timezone.localdate()
    sources = []
    for index in range(size["sources"]):
        reviewed = today - datetime.timedelta(days=rng.randint(0, 150))  # cadence 90: about 40% overdue
        sources.append(
            KnowledgeSource(
                tenant=tenant,
                title=f"Policy {index}",
                owner=owners[index % len(owners)],
                body=f"Policy {index}.",
                status="approved" if index % 10 else "draft",
                review_cadence_days=90,
                last_reviewed_on=reviewed,
                review_due_on=reviewed + datetime.timedelta(days=90),
                stale_policy="warn" if index % 4 == 0 else "exclude",
            )
        )
    KnowledgeSource.objects.bulk_create(sources, batch_size=BATCH)
    suite = EvalSuite.objects.create(tenant=tenant, name="Benchmark suite", run_as=admin)
    runs = []
    for agent in agents:
        for run_number in range(size["runs_per_agent"]):
            rates = {}
            for category in CATEGORIES:
                cases = rng.randint(2, 6)
                rates[category] = {"cases": cases, "passed": rng.randint(cases // 2, cases), "rate": 0}
            cases = sum(entry["cases"] for entry in rates.values())
            passed = sum(entry["passed"] for entry in rates.values())
            runs.append(
                EvalRun(
                    tenant=tenant,
                    suite=suite,
                    agent=agent,
                    status="completed",
                    trigger="schedule",
                    model="offline",
                    case_count=cases,
                    passed_count=passed,
                    failed_count=cases - passed,
                    pass_rate=Decimal(passed) / Decimal(cases),
                    category_rates=rates,
                    finished_at=now - datetime.timedelta(days=7 * run_number, hours=1),
                )
            )
    EvalRun.objects.bulk_create(runs, batch_size=BATCH)
    real_30 = sum(1 for turn in real_turns if turn.created_at >= thirty_day_start(now))
    return {"real_turns_30_days": real_30}


def thirty_day_start(now: datetime.datetime) -> datetime.datetime:
    from apps.evals.dashboard import period_ending

    return period_ending(now, 30).start


# --- Measuring ----------------------------------------------------------------------------


def check_page(fixture: dict, html: str) -> None:
    """The default page counts the right turns (evaluation turns left out) and draws every chart."""
    expected = fixture["real_turns_30_days"]
    problems = []
    if f"{expected} finished turns" not in html:
        problems.append(f'no "{expected} finished turns"')
    if html.count("<svg ") != 6:
        problems.append(f"{html.count('<svg ')} charts, expected 6")
    if "do not show" in html:
        problems.append("the admin is missing a panel")
    if problems:
        raise SystemExit(f"{fixture['size']['label']} tenant: " + "; ".join(problems))


def measure(fixture: dict, renders: int, verbose: bool) -> dict:
    client = Client()
    client.force_login(fixture["admin"])
    check_page(fixture, fetch(client, "/", {}).content.decode())
    if "<html" in fetch(client, "/?days=90", HTMX).content.decode():
        raise SystemExit("the htmx request got the whole page, not the body")
    queries = {label: count_queries(client, url, headers) for label, url, headers in VARIANTS}
    samples: dict[str, list[float]] = {label: [] for label, _url, _headers in VARIANTS}
    for round_number in range(WARMUP + renders):
        for label, url, headers in VARIANTS:
            started = time.perf_counter()
            fetch(client, url, headers)
            elapsed = (time.perf_counter() - started) * 1000
            if round_number >= WARMUP:
                samples[label].append(elapsed)
    if verbose:
        for label, (_count, statements) in queries.items():
            print(f"\n  queries of one render, {label} ({fixture['size']['label']} tenant):")
            for statement in statements:
                print(f"    {statement[:400]}")
    return {"samples": samples, "queries": queries}


def describe(size: dict) -> str:
    return (
        f"{size['turns']:,} turns (+{size['evaluation_turns']:,} evaluation), {size['handoffs']:,} handoffs,"
        f" {size['tool_calls']:,} tool calls, {size['sources']:,} sources, {size['approvals']:,} approvals,"
        f" {size['reviews']:,} reviews, {size['kills']:,} kills, {size['agents']} agents"
    )


def report(fixture: dict, measured: dict) -> list[float]:
    samples, queries = measured["samples"], measured["queries"]
    print(f"\n{fixture['size']['label']} tenant: {describe(fixture['size'])}")
    every: list[float] = []
    for label, values in samples.items():
        every += values
        print(f"  {label:<22} {p50_p95(values)}  queries {queries[label][0]}")
    print(f"  {'all renders':<22} {p50_p95(every)}  ({len(every)} renders)")
    return every


# --- Main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=40, help="timed renders per variant and size (default 40)")
    parser.add_argument("--verbose", action="store_true", help="print the SQL of one render of each page, timed")
    parser.add_argument("--keep", action="store_true", help="leave the database in place afterwards")
    options = parser.parse_args()
    if options.renders < 1:
        parser.error("--renders must be 1 or more")

    cache.clear()  # FLUSHDB of the benchmark's own Redis database
    with throwaway_database(DATABASE_NAME, keep=options.keep) as database_name:
        print(services_line(database_name))
        began = time.perf_counter()
        large = build_tenant(1, LARGE)
        small = build_tenant(2, SMALL)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        print(
            f"seeded in {time.perf_counter() - began:.1f} s; rows spread over the last {SPREAD_DAYS} days;"
            f" each tenant's admin signed in; per size {options.renders} timed renders of each variant after"
            f" {WARMUP} warm-up rounds, interleaved (Django test client, DEBUG off)"
        )
        measured = {
            "large": measure(large, options.renders, options.verbose),
            "small": measure(small, options.renders, options.verbose),
        }
        p95 = {
            "large": percentile(report(large, measured["large"]), 0.95),
            "small": percentile(report(small, measured["small"]), 0.95),
        }
        print("\nqueries per render, large vs small tenant")
        independent = True
        for label in measured["large"]["queries"]:
            many, few = measured["large"]["queries"][label][0], measured["small"]["queries"][label][0]
            independent = independent and many == few
            print(f"  {label:<22} {many:>4} vs {few}")
        print(f"  independent of rows: {'yes' if independent else 'no'}")
        print(
            f"p95 ratio large / small (all renders): {p95['large'] / p95['small']:.2f}x"
            f" ({p95['large']:.1f} / {p95['small']:.1f} ms)"
        )
        verdict = "PASS" if p95["large"] < TARGET_P95_MS else "MISS"
        print(f"target p95 < {TARGET_P95_MS:g} ms (large tenant, all renders): {verdict} ({p95['large']:.1f} ms)")


if __name__ == "__main__":
    main()
