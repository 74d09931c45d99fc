"""Benchmark: the approval queue page (GET /approvals/) with 10,000 pending requests.

Two tenants set up alike (a support lead whose role's grants may approve four high-risk
tools, a second lead, a support agent the agents act for, two agents): one holds 10,000
pending requests, the other 100. Each tenant's lead is signed in (``force_login``) and the
pages are fetched with Django's test client, through the whole middleware stack and the
templates as production renders them (DEBUG off; Django's test instrumentation of template
rendering is not switched on). Per tenant, interleaved, after a warm-up:

- the queue's first page (the default view: pending, most urgent first, 25 per page);
- a filtered view (``?status=pending&tool=refund.issue``);
- a deep page (``?status=pending&page=200``; the 100-row tenant has 4 pages, so it gets its
  last one);
- the htmx partial (``?status=pending&page=2`` with ``HX-Request: true`` and
  ``HX-Target: queue-results``, as the pager's Next link sends it once a filter is in the URL);
- a request's page (GET /approvals/<id>/, a different request each time).

Prints p50/p95 per variant and over all queue renders, the queries of one render of each
(counted with CaptureQueriesContext), both tenants' query counts side by side with whether
they are independent of the number of rows, the p95 ratio 10,000/100, and the target check:
p95 of the queue renders with 10,000 pending requests under 150 ms. Before timing, each page
is checked to show what it should (25 rows, the count, the lead's Decide links).

Requests are seeded with ``bulk_create``: due times spread from 20 minutes overdue to 10
hours ahead (so the sort matters and every SLA state shows), amounts from 5 to 900 (those
above 500 need two approvals, and a fifth of those already have one), 2,000 customers per
large tenant (so a request's page has earlier requests for the same customer), a small
conversation, the agent's stated reason and a source in each request's context.

Runs on its own throwaway database, bench_approvals (created and dropped here; ``--keep``
leaves it), on the server DATABASE_URL names (default postgres://postgres@127.0.0.1:5432/),
and Redis database 10 at redis://127.0.0.1:6379/ (flushed at the start;
APPROVALS_BENCH_REDIS_URL names another). About a minute.

python bench/approvals.py [--renders 50] [--verbose] [--keep]
"""

import argparse
import datetime
import random
import re
import time
import uuid
from decimal import Decimal

from _support import (
    BENCH_GATE_OVERRIDE,
    configure,
    count_queries,
    fetch,
    p50_p95,
    percentile,
    platform_admin,
    services_line,
    setup_for_pages,
    throwaway_database,
)

configure("approvals", redis_variable="APPROVALS_BENCH_REDIS_URL", redis_url="redis://127.0.0.1:6379/10")
setup_for_pages()  # django.setup() for pages fetched with the test client

from django.conf import settings  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

DATABASE_NAME = "bench_approvals"
LARGE, SMALL = 10_000, 100
TARGET_P95_MS = 150.0
WARMUP = 5
BATCH = 1_000
TOOLS = ("refund.issue", "order.cancel", "credit.adjust", "subscription.cancel")
SECOND_APPROVER_ABOVE = Decimal("500.00")
ARGUMENT_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "maxLength": 20},
        "amount": {"type": "number", "minimum": 0},
        "note": {"type": "string", "maxLength": 500},
    },
    "additionalProperties": False,
}
HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "queue-results"}
VARIANTS = (
    ("first page", "/approvals/", {}),
    ("filtered (tool=refund.issue)", "/approvals/?status=pending&tool=refund.issue", {}),
    ("deep page (page=200)", "/approvals/?status=pending&page=200", {}),
    ("htmx partial (page=2)", "/approvals/?status=pending&page=2", HTMX),
)
QUEUE_ROW = re.compile(r'<tr class="sla-')


# --- Setup --------------------------------------------------------------------------------


def build_tenant(number: int, size: int) -> dict:
    """A tenant, its people, agents, tools and grants (through the services production
    uses), then ``size`` pending requests in bulk."""
    from apps.accounts.choices import RoleKind
    from apps.accounts.models import Role, User
    from apps.accounts.services import assign_role, create_tenant
    from apps.agents.choices import RolloutMode
    from apps.agents.services import create_agent
    from apps.tools.choices import ConnectorKind, Effect, RiskTier
    from apps.tools.services import allow_tool, create_grant, save_tool

    tenant = create_tenant(name=f"Bench approvals {size:,}", slug=f"benchapprovals{number}")
    roles = {role.kind: role for role in Role.objects.filter(tenant=tenant)}

    def person(username: str, display_name: str, *kinds: str) -> User:
        user = User.objects.create_user(
            username=f"{username}-{number}", password="bench-password", display_name=display_name
        )
        for kind in kinds:
            assign_role(user=user, role=roles[kind])
        return user

    owner = person("owner", "Olivia Owner", RoleKind.ADMIN, RoleKind.AGENT_OWNER)
    lead = person("lead", "Lee Lead", RoleKind.SUPPORT_LEAD)
    second_lead = person("second-lead", "Sam Second", RoleKind.SUPPORT_LEAD)
    support = person("support", "Sasha Support", RoleKind.SUPPORT_AGENT)
    agents = [
        create_agent(
            by=platform_admin(),
            gate_override=BENCH_GATE_OVERRIDE,
            tenant=tenant,
            name=name,
            slug=slug,
            purpose="Handles refunds and cancellations (approvals benchmark).",
            owner=owner,
            channels=["web_chat"],
            rollout_mode=RolloutMode.APPROVAL,
        )
        for name, slug in (("Refunds Agent", "refunds"), ("Billing Agent", "billing"))
    ]
    for name in TOOLS:
        tool = save_tool(
            by=owner,
            tenant=tenant,
            name=name,
            description=f"{name} (approvals benchmark; never run).",
            argument_schema=ARGUMENT_SCHEMA,
            risk_tier=RiskTier.HIGH,
            writes=True,
            reversible=False,
            connector=ConnectorKind.BUILTIN,
            builtin="noop",
            amount_field="amount",
            second_approver_above=SECOND_APPROVER_ABOVE,
        )
        for agent in agents:
            allow_tool(agent=agent, tool=tool, by=owner, reason="benchmark")
        create_grant(by=owner, role=roles[RoleKind.SUPPORT_AGENT], tool=tool, effect=Effect.REQUIRE_APPROVAL)
        create_grant(by=owner, role=roles[RoleKind.SUPPORT_LEAD], tool=tool, effect=Effect.ALLOW, may_approve=True)
    requests = seed_requests(tenant, agents, support, second_lead, size, random.Random(number))
    return {"tenant": tenant, "lead": lead, "size": size, "request_ids": requests}


def seed_requests(tenant, agents, support, second_lead, size: int, rng: random.Random) -> list[int]:
    from apps.approvals.models import ApprovalDecision, ApprovalRequest

    now = timezone.now()
    customers = max(1, size // 5)
    rows = []
    for index in range(size):
        tool_name = TOOLS[0] if rng.random() < 0.5 else TOOLS[1 + index % (len(TOOLS) - 1)]
        amount = Decimal(rng.randint(500, 90_000)) / 100
        due_at = now + datetime.timedelta(minutes=rng.uniform(-20, 600))
        order = f"A-{index:06d}"
        customer = f"C-{rng.randrange(customers):05d}"
        rows.append(
            ApprovalRequest(
                tenant=tenant,
                agent=agents[index % len(agents)],
                tool_call_id=uuid.uuid4(),
                tool_name=tool_name,
                risk_tier="high",
                amount=amount,
                arguments={"order_id": order, "amount": float(amount), "note": "arrived damaged"},
                action_digest=f"{rng.getrandbits(256):064x}",
                requested_by=support,
                subject=customer,
                subject_verified=rng.random() < 0.8,
                channel="web_chat",
                conversation_id=f"conv-{index}",
                rule="risk_tier",
                rule_text="High-risk tools need a person's approval.",
                context={
                    "conversation": [
                        {"from": "customer", "text": f"Order {order} arrived broken, I want my money back."},
                        {"from": "agent", "text": f"I'm sorry. I can ask for a refund of {amount}."},
                        {"from": "customer", "text": "Yes please."},
                    ],
                    "agent_reason": "The order arrived damaged and is within the 30-day refund window [S1].",
                    "sources": [{"source_id": 7, "title": "Refund policy"}],
                },
                approvals_required=2 if amount > SECOND_APPROVER_ABOVE else 1,
                due_at=due_at,
                expires_at=due_at + datetime.timedelta(minutes=settings.APPROVAL_GRACE_MINUTES),
            )
        )
    created = ApprovalRequest.objects.bulk_create(rows, batch_size=BATCH)
    # A fifth of those needing two approvals already have the first one.
    half_approved = [row for row in created if row.approvals_required == 2 and rng.random() < 0.2]
    ApprovalDecision.objects.bulk_create(
        [
            ApprovalDecision(
                request=row, approver=second_lead, approve=True, comment="Fine by me.", approver_roles=["support_lead"]
            )
            for row in half_approved
        ],
        batch_size=BATCH,
    )
    return [row.pk for row in created]


# --- Measuring ----------------------------------------------------------------------------


def check_queue_page(label: str, html: str, size: int, page_of: int | None) -> None:
    """The page shows what it should: the right number of rows, the total, Decide links."""
    rows = len(QUEUE_ROW.findall(html))
    expected = 25 if page_of is None else page_of
    problems = []
    if rows != expected:
        problems.append(f"{rows} rows, expected {expected}")
    if label.startswith(("first", "deep")) and f"{size} requests pending" not in html:
        problems.append(f'no "{size} requests pending"')
    if ">Decide</a>" not in html:
        problems.append("no Decide link: the lead may not decide?")
    if "htmx" in label and "<html" in html:
        problems.append("the whole page, not the partial")
    if problems:
        count_line = html[html.find('id="queue-count"') :][:80]
        raise SystemExit(f"{label} ({size:,} rows): " + "; ".join(problems) + f" ({count_line})")


def measure(fixture: dict, renders: int, verbose: bool) -> dict:
    client = Client()
    client.force_login(fixture["lead"])
    size = fixture["size"]
    last_page_rows = size % 25 or 25
    for label, url, headers in VARIANTS:
        html = fetch(client, url, headers).content.decode()
        deep_is_last = label.startswith("deep") and size // 25 < 200
        check_queue_page(label, html, size, last_page_rows if deep_is_last else None)
    rng = random.Random(size)
    detail_ids = [rng.choice(fixture["request_ids"]) for _ in range(renders + WARMUP)]
    detail_html = fetch(client, f"/approvals/{detail_ids[0]}/", {}).content.decode()
    if "within the 30-day refund window" not in detail_html or "Approve</button>" not in detail_html:
        raise SystemExit(f"the request's page ({size:,} rows) lacks the stated reason or the Approve button")

    queries = {}
    for label, url, headers in VARIANTS:
        queries[label] = count_queries(client, url, headers)
    detail_counts = sorted({count_queries(client, f"/approvals/{pk}/", {})[0] for pk in detail_ids[:20]})
    queries["request's page"] = (detail_counts, count_queries(client, f"/approvals/{detail_ids[0]}/", {})[1])

    samples: dict[str, list[float]] = {label: [] for label, _url, _headers in VARIANTS}
    samples["request's page"] = []
    for round_number in range(WARMUP + renders):
        for label, url, headers in VARIANTS:
            started = time.perf_counter()
            fetch(client, url, headers)
            elapsed = (time.perf_counter() - started) * 1000
            if round_number >= WARMUP:
                samples[label].append(elapsed)
        started = time.perf_counter()
        fetch(client, f"/approvals/{detail_ids[round_number]}/", {})
        elapsed = (time.perf_counter() - started) * 1000
        if round_number >= WARMUP:
            samples["request's page"].append(elapsed)
    if verbose:
        for label, (_count, statements) in queries.items():
            print(f"\n  queries of one render, {label} ({size:,} rows):")
            for statement in statements:
                print(f"    {statement[:400]}")
    return {"samples": samples, "queries": queries}


def shown(count) -> str:
    if isinstance(count, list):
        return str(count[0]) if len(count) == 1 else f"{count[0]}-{count[-1]}"
    return str(count)


def report(size: int, measured: dict) -> list[float]:
    samples, queries = measured["samples"], measured["queries"]
    print(f"\n{size:,} pending requests (one tenant; the lead sees them all)")
    queue_samples: list[float] = []
    for label, values in samples.items():
        if label != "request's page":
            queue_samples += values
        print(f"  {label:<30} {p50_p95(values)}  queries {shown(queries[label][0])}")
    print(f"  {'all queue renders':<30} {p50_p95(queue_samples)}  ({len(queue_samples)} renders)")
    return queue_samples


# --- Main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=50, help="timed renders per variant and size (default 50)")
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
            f"seeded in {time.perf_counter() - began:.1f} s: {LARGE:,} and {SMALL:,} pending requests in two tenants"
            f" ({len(TOOLS)} high-risk tools, half of the requests refund.issue; due from 20 min overdue to 10 h"
            f" ahead; above {SECOND_APPROVER_ABOVE} two approvals, a fifth of those with one given)"
        )
        print(
            f"each tenant's support lead signed in; per size {options.renders} timed renders of each page"
            f" after {WARMUP} warm-up rounds, interleaved (Django test client, DEBUG off)"
        )
        measured = {
            size: measure(fixture, options.renders, options.verbose)
            for size, fixture in ((LARGE, large), (SMALL, small))
        }
        queue_p95 = {}
        for size in (LARGE, SMALL):
            queue_p95[size] = percentile(report(size, measured[size]), 0.95)

        print(f"\nqueries per render, {LARGE:,} vs {SMALL:,} rows")
        independent = True
        for label in measured[LARGE]["queries"]:
            many, few = measured[LARGE]["queries"][label][0], measured[SMALL]["queries"][label][0]
            independent = independent and many == few
            print(f"  {label:<30} {shown(many):>5} vs {shown(few)}")
        print(f"  independent of rows: {'yes' if independent else 'no'}")
        print(
            f"p95 ratio {LARGE:,} / {SMALL:,} rows (all queue renders):"
            f" {queue_p95[LARGE] / queue_p95[SMALL]:.2f}x ({queue_p95[LARGE]:.1f} / {queue_p95[SMALL]:.1f} ms)"
        )
        verdict = "PASS" if queue_p95[LARGE] < TARGET_P95_MS else "MISS"
        print(
            f"target p95 < {TARGET_P95_MS:g} ms ({LARGE:,} pending, all queue renders):"
            f" {verdict} ({queue_p95[LARGE]:.1f} ms)"
        )


if __name__ == "__main__":
    main()
