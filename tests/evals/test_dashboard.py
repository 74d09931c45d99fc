"""The governance dashboard at "/": every number from rows made here, with exact expected
values; evaluation runs' turns and other tenants' rows never counted; the page's query count
independent of how many agents and rows there are; the charts valid SVG carrying the numbers."""

import datetime
import re
import uuid
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import Membership
from apps.agents.models import KillSwitch
from apps.approvals.choices import ApprovalStatus
from apps.approvals.models import ApprovalRequest
from apps.evals import charts
from apps.evals.choices import ReviewKind, RunStatus, RunTrigger
from apps.evals.dashboard import governance_dashboard, parse_days, period_ending
from apps.evals.dashboard_views import dashboard_charts
from apps.evals.models import EvalRun, EvalSuite, TurnReview
from apps.guardrails.models import KillVerdict
from apps.handoffs.models import Handoff
from apps.knowledge.choices import Lifecycle, StalePolicy
from apps.knowledge.models import KnowledgeGap, KnowledgeSource
from apps.runtime.choices import TurnStatus
from apps.runtime.models import Conversation, Turn
from apps.tools.models import AgentTool, Grant, ToolCall

from ..accounts.factories import member
from ..agents.factories import AgentFactory
from ..handoffs.factories import make_handoff
from ..tools.factories import allow, builtin_tool, grant

pytestmark = pytest.mark.django_db
SVG = "{http://www.w3.org/2000/svg}"
# A fixed "now" for the selector tests: 10 March 2025, noon UTC (the site's time zone).
NOW = datetime.datetime(2025, 3, 10, 12, 0, tzinfo=datetime.UTC)


def parse_svg(markup) -> ET.Element:
    """Parse a chart this test suite itself made (never outside input)."""
    return ET.fromstring(str(markup))  # noqa: S314


def days_ago(days: float, now: datetime.datetime | None = None) -> datetime.datetime:
    return (now or timezone.now()) - datetime.timedelta(days=days)


# --- Rows, made directly (each app's own tests cover how production makes them) -----------------


def conversation(agent, *, evaluation: bool = False) -> Conversation:
    return Conversation.objects.create(
        tenant_id=agent.tenant_id, agent=agent, actor=agent.owner, channel="web_chat", evaluation=evaluation
    )


def turns(agent, decision: str, reason: str, count: int = 1, *, at=None, evaluation=False, status=None) -> list:
    """``count`` turns of ``agent`` received at ``at`` (default a day ago) and finished with this
    decision three seconds later, each in its own conversation."""
    at = at or days_ago(1)
    made = [
        Turn.objects.create(
            conversation=conversation(agent, evaluation=evaluation),
            tenant_id=agent.tenant_id,
            agent=agent,
            actor=agent.owner,
            number=1,
            input="question",
            status=status or TurnStatus.COMPLETED,
            decision=decision,
            decision_reason=reason,
            finished_at=at + datetime.timedelta(seconds=3),
        )
        for _ in range(count)
    ]
    Turn.objects.filter(pk__in=[turn.pk for turn in made]).update(created_at=at)  # the field says "now" on insert
    return made


def tool_call(agent, tool_name: str, outcome: str, *, at=None) -> ToolCall:
    call = ToolCall.objects.create(
        idempotency_key=uuid.uuid4().hex,
        tenant_id=agent.tenant_id,
        agent=agent,
        tool_name=tool_name,
        user=agent.owner,
        action_digest="0" * 64,
        outcome=outcome,
    )
    if at is not None:
        ToolCall.objects.filter(pk=call.pk).update(created_at=at)
    return call


def approval(agent, status: str, *, due_in_minutes: float = 60, decided_at=None, grace_minutes: float = 30):
    due_at = timezone.now() + datetime.timedelta(minutes=due_in_minutes)
    return ApprovalRequest.objects.create(
        tenant_id=agent.tenant_id,
        agent=agent,
        tool_call_id=uuid.uuid4(),
        tool_name="refund.issue",
        risk_tier="high",
        action_digest="0" * 64,
        requested_by=agent.owner,
        rule="risk_tier",
        rule_text="High-risk tools need a person.",
        status=status,
        due_at=due_at,
        expires_at=due_at + datetime.timedelta(minutes=grace_minutes),
        decided_at=decided_at,
    )


def review(agent, reviewer, kind: str, *, evaluation: bool = False, at=None, **verdict) -> TurnReview:
    (turn,) = turns(agent, "answer", "grounded", evaluation=evaluation, at=at)
    return TurnReview.objects.create(
        tenant_id=agent.tenant_id,
        agent=agent,
        turn=turn,
        kind=kind,
        agent_action="answer",
        reviewed_by=reviewer,
        reviewed_at=at or days_ago(1),
        **verdict,
    )


def handoff(tenant, reason_code: str, *, at=None) -> Handoff:
    made = make_handoff(tenant, reason_code=reason_code)
    if at is not None:
        Handoff.objects.filter(pk=made.pk).update(created_at=at)
    return made


def eval_run(agent, *, passed: int, cases: int, categories: dict, status=RunStatus.COMPLETED, finished_at=None):
    suite, _ = EvalSuite.objects.get_or_create(
        tenant_id=agent.tenant_id, name=f"Suite of {agent.slug}", defaults={"agent": agent, "run_as": agent.owner}
    )
    return EvalRun.objects.create(
        tenant_id=agent.tenant_id,
        suite=suite,
        agent=agent,
        status=status,
        trigger=RunTrigger.PAGE,
        prompt_version=None,
        model="offline",
        case_count=cases,
        passed_count=passed,
        failed_count=cases - passed,
        pass_rate=Decimal(passed) / Decimal(cases) if cases else None,
        category_rates={
            name: {"cases": total, "passed": ok, "rate": ok / total} for name, (ok, total) in categories.items()
        },
        finished_at=finished_at or days_ago(1),
    )


def source(tenant, owner, title: str, *, reviewed_days_ago: int | None, status=Lifecycle.APPROVED, **fields):
    """A source whose last review was that many days ago (cadence 90 days): over 90 is stale."""
    reviewed = (
        timezone.localdate() - datetime.timedelta(days=reviewed_days_ago) if reviewed_days_ago is not None else None
    )
    return KnowledgeSource.objects.create(
        tenant=tenant,
        title=title,
        owner=owner,
        body=f"{title}.",
        status=status,
        review_cadence_days=90,
        last_reviewed_on=reviewed,
        **fields,
    )


def board(user, tenant, days=30, now=None):
    return governance_dashboard(user=user, tenant=tenant, days=days, now=now)


# --- Who sees what --------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_the_front_page_still_lists_the_agents_and_any_engaged_kill_switch(client, people, agent, other_agent):
    KillSwitch.objects.create(
        tenant=agent.tenant, engaged=True, reason="Quoting a withdrawn policy", changed_at=timezone.now()
    )
    client.force_login(people["support_agent"])
    html = client.get("/").content.decode()
    assert "Support Assistant" in html
    assert "Acme Support kill switch engaged" in html and "Quoting a withdrawn policy" in html
    assert other_agent.name not in html


def test_a_person_without_a_role_gets_the_page_and_no_numbers(client, people, agent):
    client.force_login(people["nobody"])
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "You hold no role that shows agents yet" in html
    assert agent.name not in html and "<svg" not in html


def test_another_tenants_slug_is_a_404_and_never_its_numbers(client, people, agent, other_agent, other_tenant):
    turns(other_agent, "fallback", "knowledge_gap", 3)
    client.force_login(people["admin"])
    assert client.get("/", {"tenant": "globex"}).status_code == 404
    assert client.get("/", {"tenant": "no-such-tenant"}).status_code == 404  # the same answer: existence not told
    html = client.get("/").content.decode()  # the default is the person's own tenant
    assert "Acme Support" in html and other_agent.name not in html
    assert "0 finished turns" in html


def test_a_superuser_sees_every_tenant_and_picks_one(client, superuser, agent, other_agent):
    turns(other_agent, "answer", "grounded", 2)
    client.force_login(superuser)
    default = client.get("/").content.decode()
    assert "Acme Support</strong> · last 30 days" in default  # first by name
    assert 'value="globex"' in default
    globex = client.get("/", {"tenant": "globex", "days": "7"}).content.decode()
    assert "Globex Retail</strong> · last 7 days" in globex
    assert other_agent.name in globex and agent.name not in globex
    assert "2 finished turns" in globex


@pytest.mark.parametrize("days", ["abc", "365", "-7", "0", "9" * 5000, "30.5"])
def test_a_period_not_offered_falls_back_to_30_days_and_says_so(client, people, agent, days):
    client.force_login(people["admin"])
    response = client.get("/", {"days": days})
    assert response.status_code == 200
    html = response.content.decode()
    assert "is not a period the dashboard offers: pick 7, 30 or 90 days. Showing the last 30 days." in html
    assert '<option value="30" selected>' in html
    assert "last 30 days" in html


def test_parse_days():
    assert parse_days(None) == (30, "")
    assert parse_days("") == (30, "")
    assert parse_days("7") == (7, "")
    assert parse_days(" 90 ") == (90, "")
    assert parse_days("14")[0] == 30 and parse_days("14")[1]


def test_panels_follow_the_persons_roles_in_the_tenant(client, people, agent):
    approval(agent, ApprovalStatus.PENDING)
    KillVerdict.objects.create(tenant=agent.tenant, rule="injection.ignore_previous", created_at=days_ago(1))
    client.force_login(people["support_agent"])  # reads agents, turns, handoffs, reviews
    html = client.get("/").content.decode()
    assert "Turns per day by decision" in html and "Handoffs by reason" in html
    assert "Approvals waiting" not in html and "Guardrail kills</h2>" not in html
    assert "Tool failures</h2>" not in html and "Stale sources by owner" not in html
    assert "do not show: evaluation runs, knowledge gaps, approval decisions, tool calls, pending approvals" in html

    client.force_login(people["compliance"])  # reads everything
    html = client.get("/").content.decode()
    for heading in ("Approvals waiting", "Guardrail kills</h2>", "Tool failures</h2>", "Stale sources by owner"):
        assert heading in html
    assert "do not show" not in html


def test_htmx_swaps_only_the_body(client, people, agent):
    client.force_login(people["admin"])
    response = client.get("/", {"days": "7"}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="dashboard-body")
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and "<form" not in html
    assert "last 7 days" in html and "Support Assistant" in html
    full = client.get("/").content.decode()
    assert 'hx-target="#dashboard-body"' in full and 'id="dashboard-body"' in full
    assert 'action="/"' in full  # the same form works without JavaScript


# --- Each number ------------------------------------------------------------------------------


@pytest.fixture
def traffic(agent, other_agent):
    """Real turns of the period, and what must not be counted beside them."""
    turns(agent, "answer", "grounded", 6)
    turns(agent, "answer", "tool_result", 2)
    turns(agent, "fallback", "knowledge_gap", 3)
    turns(agent, "fallback", "turn_failed", 1, status=TurnStatus.FAILED)
    turns(agent, "escalate", "human_request", 1)
    turns(agent, "refuse", "guardrail_kill", 1, status=TurnStatus.REFUSED)
    # Not counted: still waiting, finished before the period, evaluation runs, another tenant.
    turns(agent, "", "", 1, status=TurnStatus.WAITING_APPROVAL)
    turns(agent, "answer", "grounded", 2, at=days_ago(40))
    turns(agent, "answer", "grounded", 5, evaluation=True)
    turns(agent, "fallback", "knowledge_gap", 5, evaluation=True)
    turns(other_agent, "fallback", "knowledge_gap", 4)


def test_grounded_fallback_and_knowledge_gap_rates_count_only_real_turns(people, tenant, traffic):
    found = board(people["admin"], tenant).turns
    assert found.finished == 14  # 24 if evaluation turns were counted, 18 with the other tenant's
    assert (found.grounded.part, found.grounded.whole) == (6, 14)
    assert (found.fallback.part, found.fallback.whole) == (4, 14)
    assert (found.knowledge_gap.part, found.knowledge_gap.whole) == (3, 14)
    assert found.grounded.percent == "42.9%" and found.knowledge_gap.percent == "21.4%"
    assert found.by_decision == {"answer": 8, "fallback": 4, "escalate": 1, "refuse": 1}


def test_turns_per_day_by_decision(people, tenant, agent):
    turns(agent, "answer", "grounded", 3, at=NOW - datetime.timedelta(hours=1))  # 10 March
    turns(agent, "fallback", "knowledge_gap", 2, at=NOW - datetime.timedelta(hours=11))  # 10 March, 01:00
    turns(agent, "answer", "grounded", 1, at=NOW - datetime.timedelta(hours=13))  # 9 March, 23:00
    turns(agent, "escalate", "topic", 1, at=NOW - datetime.timedelta(days=6, hours=11))  # 4 March, 01:00: first day
    turns(agent, "answer", "grounded", 4, at=NOW - datetime.timedelta(days=6, hours=13))  # 3 March: before it
    # Received a second before the period, finished inside it: a turn counts on the day it arrived.
    turns(agent, "clarify", "weak_match", 1, at=datetime.datetime(2025, 3, 3, 23, 59, 59, tzinfo=datetime.UTC))
    found = board(people["admin"], tenant, days=7, now=NOW).turns
    assert [day.day for day in found.by_day] == [datetime.date(2025, 3, day) for day in range(4, 11)]
    daily = {day.day.day: day.counts for day in found.by_day}
    assert daily == {4: {"escalate": 1}, 5: {}, 6: {}, 7: {}, 8: {}, 9: {"answer": 1}, 10: {"answer": 3, "fallback": 2}}
    assert found.finished == 7
    table = str(dashboard_charts(board(people["admin"], tenant, days=7, now=NOW))["turns_table"])
    # answer, clarify, fallback, escalate, refuse, total
    assert (
        '<th scope="row" class="nowrap">2025-03-10</th>'
        + "".join(f'<td class="number">{turns}</td>' for turns in (3, 0, 2, 0, 0, 5))
        in table
    )
    assert table.count("<tr>") == 1 + 7 + 1  # head, seven days, period totals


def test_handoff_rate_by_reason(people, tenant, other_tenant, traffic):
    for code in ("human_request", "human_request", "human_request", "topic"):
        handoff(tenant, code)
    handoff(tenant, "negative_sentiment", at=days_ago(40))
    handoff(other_tenant, "topic")
    found = board(people["admin"], tenant).handoffs
    assert found.total == 4
    assert (found.rate.part, found.rate.whole) == (4, 14)
    assert [(entry.reason, entry.handoffs, entry.rate.percent) for entry in found.by_reason] == [
        ("human_request", 3, "21.4%"),
        ("topic", 1, "7.1%"),
    ]


def test_top_unanswered_topics_of_the_period(people, tenant, other_tenant):
    KnowledgeGap.objects.create(
        tenant=tenant, topic="refund warranty", example_query="warranty?", occurrences=2, last_seen=days_ago(2)
    )
    KnowledgeGap.objects.create(
        tenant=tenant, topic="crypto payment", example_query="bitcoin?", occurrences=7, last_seen=days_ago(3)
    )
    KnowledgeGap.objects.create(
        tenant=tenant, topic="fax number", example_query="fax?", occurrences=50, last_seen=days_ago(45)
    )
    KnowledgeGap.objects.create(
        tenant=other_tenant, topic="secret globex", example_query="x", occurrences=99, last_seen=days_ago(1)
    )
    found = board(people["admin"], tenant).gap_topics
    assert [(gap.topic, gap.occurrences) for gap in found] == [("crypto payment", 7), ("refund warranty", 2)]
    assert [gap.topic for gap in board(people["admin"], tenant, days=90).gap_topics] == [
        "fax number",
        "crypto payment",
        "refund warranty",
    ]


def test_human_override_rate_combines_rejections_and_reviews(people, tenant, agent, other_agent):
    lead = people["support_lead"]
    for status in (ApprovalStatus.APPROVED, ApprovalStatus.EXECUTED, ApprovalStatus.FAILED):
        approval(agent, status, decided_at=days_ago(2))
    approval(agent, ApprovalStatus.REJECTED, decided_at=days_ago(1))
    approval(agent, ApprovalStatus.PENDING)  # not decided
    approval(agent, ApprovalStatus.EXPIRED)  # nobody decided it
    approval(agent, ApprovalStatus.REJECTED, decided_at=days_ago(40))  # before the period
    approval(other_agent, ApprovalStatus.REJECTED, decided_at=days_ago(1))
    review(agent, lead, ReviewKind.SHADOW, agreed=True)
    review(agent, lead, ReviewKind.SHADOW, agreed=False)
    review(agent, lead, ReviewKind.SUGGESTION, accepted=False)
    review(agent, lead, ReviewKind.POST_HOC, correct=True)
    review(agent, lead, ReviewKind.POST_HOC, correct=False)
    review(agent, lead, ReviewKind.SHADOW, evaluation=True, agreed=False)  # an evaluation turn: never counted
    review(agent, lead, ReviewKind.SHADOW, at=days_ago(40), agreed=False)

    found = board(people["admin"], tenant).overrides
    assert (found.approvals.part, found.approvals.whole) == (1, 4)
    assert (found.reviews.part, found.reviews.whole) == (3, 5)
    assert (found.combined.part, found.combined.whole) == (4, 9)
    assert found.combined.percent == "44.4%"
    assert [(kind.kind, kind.overridden.part, kind.overridden.whole) for kind in found.review_kinds] == [
        ("shadow", 1, 2),
        ("suggestion", 1, 1),
        ("post_hoc", 1, 2),
    ]


def test_tool_failure_rate_counts_calls_that_ran(people, tenant, agent, other_agent):
    for outcome in ("executed", "executed", "failed", "failed"):
        tool_call(agent, "order.lookup", outcome)
    for outcome in ("executed", "executed", "executed", "executed"):
        tool_call(agent, "refund.issue", outcome)
    for outcome in ("denied", "denied", "proposed", "needs_approval", "executing"):  # never ran (yet)
        tool_call(agent, "refund.issue", outcome)
    tool_call(agent, "order.lookup", "failed", at=days_ago(40))
    tool_call(other_agent, "order.lookup", "failed")
    found = board(people["admin"], tenant).tools
    assert (found.failed.part, found.failed.whole) == (2, 8)
    assert found.failed.percent == "25.0%"
    assert [(entry.tool_name, entry.failed.part, entry.failed.whole) for entry in found.by_tool] == [
        ("order.lookup", 2, 4),
        ("refund.issue", 0, 4),
    ]


def test_pending_approvals_by_sla_reuse_the_queues_rule(people, tenant, agent, other_agent):
    approval(agent, ApprovalStatus.PENDING, due_in_minutes=120)  # on time
    approval(agent, ApprovalStatus.PENDING, due_in_minutes=5)  # due soon (within 15 minutes)
    approval(agent, ApprovalStatus.PENDING, due_in_minutes=-5)  # overdue, in its grace period
    approval(agent, ApprovalStatus.PENDING, due_in_minutes=-120)  # past grace, the sweep has not run yet
    approval(agent, ApprovalStatus.APPROVED, decided_at=days_ago(1))
    approval(other_agent, ApprovalStatus.PENDING, due_in_minutes=-5)
    found = board(people["admin"], tenant).approvals
    assert found.pending == 4
    assert found.past_due == 2
    assert [(state, pending) for state, _label, pending in found.states] == [
        ("on_time", 1),
        ("due_soon", 1),
        ("overdue", 1),
        ("expired", 1),
    ]


def test_stale_sources_by_owner(people, tenant, other_tenant):
    kim = people["knowledge_owner"]
    lee = member(tenant, "knowledge_owner", username="lee.knowledge")
    source(tenant, kim, "Refund policy", reviewed_days_ago=100)
    source(tenant, kim, "Shipping", reviewed_days_ago=120, stale_policy=StalePolicy.WARN)
    source(tenant, kim, "Warranty", reviewed_days_ago=10)  # fresh
    source(tenant, kim, "Old draft", reviewed_days_ago=200, status=Lifecycle.DRAFT)  # not approved: not stale
    source(tenant, lee, "Never reviewed", reviewed_days_ago=None)  # approved, no review date: overdue
    globex = member(other_tenant, "knowledge_owner", username="gus.globex")
    source(other_tenant, globex, "Globex policy", reviewed_days_ago=300)

    found = board(people["admin"], tenant).stale
    assert found.total == 3
    assert [(entry.owner, entry.stale, entry.excluded, entry.warned) for entry in found.owners] == [
        (kim, 2, 1, 1),
        (lee, 1, 1, 0),
    ]
    assert found.owners[0].oldest_due == timezone.localdate() - datetime.timedelta(days=30)
    # The dashboard's query and the model's own rule agree on every source.
    today = timezone.localdate()
    overdue = set(KnowledgeSource.objects.overdue(today).values_list("pk", flat=True))
    assert overdue == {item.pk for item in KnowledgeSource.objects.all() if item.is_overdue(today)}


def test_agents_without_owners_or_with_unused_grants(people, tenant, agent):
    departed = member(tenant, "agent_owner", username="dana.departed")
    orphan = AgentFactory(tenant=tenant, owner=departed, name="Orphan Agent", slug="orphan")
    Membership.objects.filter(user=departed).delete()  # left the tenant: holds no role there now
    inactive = member(tenant, "agent_owner", username="ivan.inactive")
    dormant = AgentFactory(tenant=tenant, owner=inactive, name="Dormant Agent", slug="dormant")
    type(inactive).objects.filter(pk=inactive.pk).update(is_active=False)

    lookup = builtin_tool(tenant, name="order.lookup")
    ping = builtin_tool(tenant, name="noop.ping")
    allow(agent, lookup, ping)
    tool_call(agent, "order.lookup", "executed")
    ToolCall.objects.filter(agent=agent).update(tool=lookup)
    stale_grant = grant(ping, "support_agent")
    Grant.objects.filter(pk=stale_grant.pk).update(created_at=days_ago(45))
    used = grant(lookup, "support_agent")
    Grant.objects.filter(pk=used.pk).update(created_at=days_ago(45), last_used_at=days_ago(2))
    grant(lookup, "support_lead")  # new: not unused yet

    found = board(people["admin"], tenant)
    problems = {row.agent.name: row.owner_problem for row in found.agents}
    assert problems == {
        "Support Assistant": "",
        "Orphan Agent": "owner holds no role in this tenant",
        "Dormant Agent": "owner's account is inactive",
    }
    assert [row.agent for row in found.agents_without_owner] == [dormant, orphan]
    assert {row.agent.name: row.never_used_tools for row in found.agents} == {
        "Support Assistant": ["noop.ping"],
        "Orphan Agent": [],
        "Dormant Agent": [],
    }
    assert [(entry.role, entry.tool, entry.days_unused) for entry in found.grants.unused_role_grants] == [
        ("Support agent", "noop.ping", 45)
    ]
    assert AgentTool.objects.filter(agent=agent).count() == 2


def test_guardrail_kills_per_day_and_by_rule(people, tenant, other_tenant):
    for hours, rule in ((1, "injection.ignore_previous"), (2, "injection.ignore_previous"), (30, "pii.card_number")):
        KillVerdict.objects.create(tenant=tenant, rule=rule, created_at=NOW - datetime.timedelta(hours=hours))
    KillVerdict.objects.create(tenant=tenant, rule="pii.card_number", created_at=NOW - datetime.timedelta(days=8))
    KillVerdict.objects.create(tenant=other_tenant, rule="injection.ignore_previous", created_at=NOW)
    found = board(people["admin"], tenant, days=7, now=NOW).kills
    assert found.total == 3
    assert dict(found.by_day) == {datetime.date(2025, 3, day): 0 for day in range(4, 9)} | {
        datetime.date(2025, 3, 9): 1,
        datetime.date(2025, 3, 10): 2,
    }
    assert [(entry.rule, entry.kills) for entry in found.by_rule] == [
        ("injection.ignore_previous", 2),
        ("pii.card_number", 1),
    ]


def test_accuracy_reads_each_agents_latest_completed_run(people, tenant, agent, other_agent):
    billing = AgentFactory(tenant=tenant, owner=people["agent_owner"], name="Billing Agent", slug="billing")
    AgentFactory(tenant=tenant, owner=people["agent_owner"], name="New Agent", slug="new")  # no run yet
    eval_run(agent, passed=2, cases=4, categories={"grounding": (2, 4)}, finished_at=days_ago(20))
    eval_run(agent, passed=5, cases=6, categories={"grounding": (3, 4), "injection": (2, 2)}, finished_at=days_ago(2))
    eval_run(agent, passed=0, cases=0, categories={}, status=RunStatus.FAILED, finished_at=days_ago(1))
    eval_run(agent, passed=0, cases=0, categories={}, status=RunStatus.RUNNING, finished_at=days_ago(0))
    eval_run(billing, passed=3, cases=4, categories={"grounding": (1, 2), "fallback": (2, 2)}, finished_at=days_ago(60))
    eval_run(other_agent, passed=0, cases=9, categories={"grounding": (0, 9)})

    found = board(people["admin"], tenant, days=7).accuracy  # the latest run, however old
    assert [(row.agent.name, row.overall.part, row.overall.whole) for row in found.agents] == [
        ("Billing Agent", 3, 4),
        ("Support Assistant", 5, 6),
    ]
    assert found.without_run == 1
    assert [(entry.category, entry.rate.part, entry.rate.whole) for entry in found.categories] == [
        ("grounding", 4, 6),
        ("fallback", 2, 2),
        ("injection", 2, 2),
    ]
    assert (found.overall.part, found.overall.whole) == (8, 10)
    support = found.agents[1]
    assert [rate and (rate.part, rate.whole) for rate in support.columns] == [(3, 4), None, (2, 2)]


def test_the_page_shows_the_numbers_and_their_charts(client, people, tenant, agent, traffic):
    eval_run(agent, passed=5, cases=6, categories={"grounding": (3, 4), "injection": (2, 2)})
    handoff(tenant, "human_request")
    client.force_login(people["admin"])
    html = client.get("/").content.decode()
    assert "14 finished turns" in html
    assert "42.9%" in html and "21.4%" in html  # grounded, knowledge gaps
    assert "83.3%" in html  # the evaluation pass rate
    svgs = re.findall(r"<svg .*?</svg>", html, flags=re.S)
    assert len(svgs) == 6  # accuracy, turns, handoffs, tools, stale, kills
    for svg in svgs:
        root = parse_svg(svg)
        assert root.tag == f"{SVG}svg" and root.get("role") == "img"
        title = root.find(f"{SVG}title")
        assert title is not None and title.text
        assert root.get("aria-labelledby") == f"{title.get('id')} {root.find(f'{SVG}desc').get('id')}"
    accuracy = parse_svg(svgs[0])
    assert accuracy.find(f"{SVG}desc").text == "Grounding 75.0% (3 of 4 cases); Prompt injection 100.0% (2 of 2 cases)."
    turns_chart = parse_svg(next(svg for svg in svgs if 'id="chart-turns-title"' in svg))
    assert (
        "totals: Answer 8; Clarify 0; Fallback 4; Escalate to a person 1; Refuse 1."
        in turns_chart.find(f"{SVG}desc").text
    )


# --- Query count ------------------------------------------------------------------------------------


def populate(tenant, owner, agents: int) -> None:
    """``agents`` agents, each with a run, turns, a handoff, tool calls, approvals, reviews,
    sources, a gap, a kill, an allowlisted tool and a grant."""
    for index in range(agents):
        made = AgentFactory(tenant=tenant, owner=owner, name=f"Agent {index}", slug=f"agent-{index}")
        eval_run(made, passed=3, cases=4, categories={"grounding": (2, 3), "pii": (1, 1)})
        turns(made, "answer", "grounded", 3)
        turns(made, "fallback", "knowledge_gap", 2)
        turns(made, "answer", "grounded", 2, evaluation=True)
        handoff(tenant, f"reason_{index}")
        tool = builtin_tool(tenant, name=f"tool.number{index}")
        allow(made, tool)
        grant(tool, "support_agent")
        tool_call(made, tool.name, "executed")
        tool_call(made, tool.name, "failed")
        approval(made, ApprovalStatus.PENDING, due_in_minutes=-5)
        approval(made, ApprovalStatus.REJECTED, decided_at=days_ago(1))
        review(made, owner, ReviewKind.SHADOW, agreed=False)
        source(tenant, owner, f"Source {index}", reviewed_days_ago=100)
        KnowledgeGap.objects.create(tenant=tenant, topic=f"topic {index}", example_query="?", last_seen=days_ago(1))
        KillVerdict.objects.create(tenant=tenant, rule=f"rule.{index}", created_at=days_ago(index % 5))


def queries_for_page(client) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/")
    assert response.status_code == 200
    return len(captured)


def test_the_page_costs_the_same_queries_for_one_agent_or_many(client, tenant, other_tenant):
    owner = member(tenant, "admin", username="ada.admin")
    populate(tenant, owner, 1)
    other_owner = member(other_tenant, "admin", username="bo.admin")
    populate(other_tenant, other_owner, 8)

    client.force_login(owner)
    few = queries_for_page(client)
    client.force_login(other_owner)
    many = queries_for_page(client)
    html = client.get("/").content.decode()
    # Per agent: 5 real turns and the reviewed one; the 2 evaluation turns are not counted.
    assert "Agent 7" in html and "8 pending" in html and "48 finished turns" in html
    assert few == many, f"{few} queries with 1 agent, {many} with 8"
    assert many <= 30


# --- Charts ---------------------------------------------------------------------------------------


def test_a_bar_chart_is_valid_svg_with_its_values_and_escapes_labels():
    svg = charts.bar_chart(
        chart_id="chart-test",
        title="Pass rate <by> category",
        bars=[charts.Bar("grounding", 5 / 6, "5 of 6 cases"), charts.Bar("<script>", 0.5)],
    )
    root = parse_svg(str(svg))
    assert root.find(f"{SVG}title").text == "Pass rate <by> category"
    assert root.find(f"{SVG}desc").text == "grounding 83.3% (5 of 6 cases); <script> 50.0%."
    bars = root.findall(f".//{SVG}rect")
    assert [bar.find(f"{SVG}title").text for bar in bars] == ["grounding: 83.3% (5 of 6 cases)", "<script>: 50.0%"]
    heights = [float(bar.get("height")) for bar in bars]
    assert heights[0] / heights[1] == pytest.approx((5 / 6) / 0.5, rel=0.01)
    assert "<script>" not in str(svg)  # escaped in the markup


def test_a_stacked_daily_chart_stacks_each_day_and_gives_totals():
    days = [datetime.date(2025, 3, day) for day in (8, 9, 10)]
    svg = charts.stacked_daily_bars(
        chart_id="chart-daily",
        title="Turns",
        days=days,
        series=[charts.Series("answer", "decision-answer", [2, 0, 4]), charts.Series("fallback", "x", [2, 1, 0])],
    )
    chart, legend = str(svg).split("</svg>")
    root = parse_svg(chart + "</svg>")
    rects = root.findall(f".//{SVG}rect")
    assert [rect.find(f"{SVG}title").text for rect in rects] == [
        "2025-03-08 · answer: 2",
        "2025-03-08 · fallback: 2",
        "2025-03-09 · fallback: 1",
        "2025-03-10 · answer: 4",
    ]
    first_day = [float(rect.get("height")) for rect in rects[:2]]
    assert first_day[0] == first_day[1] == pytest.approx(float(rects[3].get("height")) / 2)
    assert root.find(f"{SVG}desc").text == "3 days from 2025-03-08 to 2025-03-10; totals: answer 6; fallback 3."
    assert "answer (6)" in legend and "fallback (3)" in legend


def test_horizontal_bars_and_empty_charts():
    svg = charts.horizontal_bars(
        chart_id="chart-rows", title="Handoffs", bars=[charts.Bar("human_request", 3), charts.Bar("topic", 1)]
    )
    root = parse_svg(str(svg))
    widths = [float(rect.get("width")) for rect in root.findall(f".//{SVG}rect")]
    assert widths[0] == pytest.approx(3 * widths[1])
    assert root.find(f"{SVG}desc").text == "human_request 3; topic 1."
    empty = parse_svg(str(charts.horizontal_bars(chart_id="none", title="Nothing", bars=[], empty="No handoffs.")))
    assert empty.find(f"{SVG}desc").text == "No handoffs." and not empty.findall(f".//{SVG}rect")
    assert parse_svg(str(charts.stacked_daily_bars(chart_id="z", title="Zero", days=[], series=[]))) is not None


def test_period_is_whole_days_ending_today():
    period = period_ending(NOW, 7)
    assert period.start == datetime.datetime(2025, 3, 4, tzinfo=datetime.UTC)
    assert period.end == NOW
    assert period.dates[0] == datetime.date(2025, 3, 4) and period.dates[-1] == datetime.date(2025, 3, 10)
