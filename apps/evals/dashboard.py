"""What the governance dashboard (the front page, "/") reads: for one tenant and a period,
how well its agents answer and how often people have to step in.

``governance_dashboard`` returns every panel at once. Each panel is one or two aggregate
queries (``Count`` with ``filter``, grouped in the database), so the page costs the same
number of queries whether the tenant has one agent or a hundred, a hundred turns or a
million. docs/dashboard.md says what each number means, for a compliance reader.

Two rules hold throughout:

- Turns of evaluation runs (``Conversation.evaluation``) are never production traffic:
  every rate over turns or reviews filters them out in the query. The runtime already keeps
  them from creating handoffs, knowledge gaps, kill verdicts and executed tool calls.
- A panel is read only if the person's roles in the tenant let them read what it counts
  (``PANEL_PERMISSIONS``); otherwise it is ``None`` and the page says so. The tenant itself
  must be one where they hold a role (the view checks, through ``tenants_visible_to``).

Rules that belong to another app are that app's, reused here: the approval SLA
(``approvals.selectors.sla_status``), a source overdue for review
(``KnowledgeSourceQuerySet.overdue``), a grant unused (``tools.selectors.grant_usage_report``).
"""

import datetime
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from django.db.models import Count, Exists, F, Min, OuterRef, Q, Subquery
from django.db.models.functions import TruncDate
from django.utils import timezone

from apps.accounts.models import Membership, Tenant, User
from apps.accounts.permissions import has_tenant_permission
from apps.agents.models import Agent
from apps.agents.selectors import agents_visible_to
from apps.approvals.choices import ApprovalStatus
from apps.approvals.models import ApprovalRequest
from apps.approvals.selectors import SlaStatus, sla_status
from apps.guardrails.models import KillVerdict
from apps.handoffs.models import Handoff
from apps.knowledge.choices import StalePolicy
from apps.knowledge.models import KnowledgeGap, KnowledgeSource
from apps.runtime.choices import FINISHED_STATUSES, Decision
from apps.runtime.models import Turn
from apps.tools.choices import Outcome
from apps.tools.models import ToolCall
from apps.tools.selectors import UNUSED_AFTER_DAYS, grant_usage_report

from .choices import Category, ReviewKind, RunStatus
from .models import EvalRun, TurnReview

PERIODS = (7, 30, 90)
DEFAULT_PERIOD = 30
TOP_GAP_TOPICS = 10
# The decision layer's reason codes (apps/runtime/decisions.py) the panels single out.
GROUNDED = "grounded"
KNOWLEDGE_GAP = "knowledge_gap"

# What a person must be allowed to read, in the tenant, to see each panel.
PANEL_PERMISSIONS = {
    "accuracy": "evals.view_evalrun",
    "turns": "runtime.view_turn",
    "gap_topics": "knowledge.view_knowledgegap",
    "handoffs": "handoffs.view_handoff",
    "approval_overrides": "approvals.view_approvalrequest",
    "review_overrides": "evals.view_turnreview",
    "tools": "tools.view_toolcall",
    "approvals": "approvals.view_approvalrequest",
    "stale": "knowledge.view_knowledgesource",
    "kills": "guardrails.view_killverdict",
}
# A review that says the person did not go along with the agent, whatever its kind.
OVERRIDDEN = Q(agreed=False) | Q(accepted=False) | Q(correct=False)


# --- Building blocks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """The last ``days`` calendar days, today included, in the site's time zone: from the
    first day's midnight to now."""

    days: int
    start: datetime.datetime
    end: datetime.datetime

    @property
    def dates(self) -> list[datetime.date]:
        first = timezone.localdate(self.start)
        return [first + datetime.timedelta(days=offset) for offset in range(self.days)]


def period_ending(now: datetime.datetime, days: int) -> Period:
    first = timezone.localdate(now) - datetime.timedelta(days=days - 1)
    start = timezone.make_aware(datetime.datetime.combine(first, datetime.time.min))
    return Period(days=days, start=start, end=now)


def parse_days(value: str | None) -> tuple[int, str]:
    """The period a request asks for, and a message when it asked for one that is not offered
    (the default is used instead)."""
    if value is None or not value.strip():
        return DEFAULT_PERIOD, ""
    offered = {str(days): days for days in PERIODS}
    if value.strip() in offered:
        return offered[value.strip()], ""
    choices = ", ".join(str(days) for days in PERIODS[:-1]) + f" or {PERIODS[-1]}"
    return DEFAULT_PERIOD, (
        f"“{value[:20]}” is not a period the dashboard offers: pick {choices} days. "
        f"Showing the last {DEFAULT_PERIOD} days."
    )


@dataclass(frozen=True)
class Rate:
    """``part`` of ``whole``; no rate at all (not 0%) when there is nothing to count."""

    part: int
    whole: int

    @property
    def value(self) -> float | None:
        return self.part / self.whole if self.whole else None

    @property
    def percent(self) -> str:
        return "—" if self.value is None else f"{self.value * 100:.1f}%"

    def __str__(self) -> str:
        return self.percent


def _within(period: Period, column: str) -> Q:
    return Q(**{f"{column}__gte": period.start, f"{column}__lte": period.end})


# --- Panels --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryRate:
    category: str
    label: str
    rate: Rate  # passed of cases


@dataclass
class AgentAccuracy:
    agent: Agent
    run: EvalRun
    categories: list[CategoryRate]
    columns: list[Rate | None] = field(default_factory=list)  # one per category of the panel's table

    @property
    def overall(self) -> Rate:
        return Rate(self.run.passed_count, self.run.case_count)

    @property
    def on_older_prompt(self) -> bool:
        """The run tested a prompt version the agent has since replaced."""
        current = self.agent.current_prompt.number if self.agent.current_prompt_id else None
        return self.run.prompt_version != current


@dataclass
class AccuracyPanel:
    agents: list[AgentAccuracy]
    categories: list[CategoryRate]  # pooled over the agents' latest runs
    without_run: int  # agents with no completed run yet

    @property
    def overall(self) -> Rate:
        return Rate(sum(row.run.passed_count for row in self.agents), sum(row.run.case_count for row in self.agents))


@dataclass
class DayDecisions:
    day: datetime.date
    counts: dict[str, int]  # decision -> finished turns

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class TurnsPanel:
    finished: int
    by_decision: dict[str, int]
    by_day: list[DayDecisions]
    grounded: Rate  # answers from an approved source, of all finished turns
    fallback: Rate
    knowledge_gap: Rate  # fallbacks because no approved source matched, of all finished turns

    @property
    def decisions(self) -> list[tuple[str, str, int]]:
        """(decision, label, turns) in the decision layer's order, then any other value."""
        labels = dict(Decision.choices)
        known = [(value, labels[value], self.by_decision.get(value, 0)) for value in Decision.values]
        other = [
            (value, value or "no decision", turns) for value, turns in self.by_decision.items() if value not in labels
        ]
        return known + other


@dataclass(frozen=True)
class ReasonCount:
    reason: str
    handoffs: int
    rate: Rate  # of real turns


@dataclass
class HandoffsPanel:
    total: int
    rate: Rate  # handoffs of real turns
    by_reason: list[ReasonCount]


@dataclass(frozen=True)
class ReviewKindCount:
    kind: str
    label: str
    overridden: Rate  # reviews where the person did not go along with the agent, of reviews


@dataclass
class OverridesPanel:
    approvals: Rate | None  # rejected of decided (None: the person may not read approvals)
    reviews: Rate | None  # overridden of reviewed (None: the person may not read reviews)
    review_kinds: list[ReviewKindCount]

    @property
    def combined(self) -> Rate | None:
        if self.approvals is None or self.reviews is None:
            return None
        return Rate(self.approvals.part + self.reviews.part, self.approvals.whole + self.reviews.whole)


@dataclass(frozen=True)
class ToolFailures:
    tool_name: str
    failed: Rate  # failed of executed + failed


@dataclass
class ToolsPanel:
    failed: Rate
    by_tool: list[ToolFailures]


@dataclass
class ApprovalsPanel:
    pending: int
    by_sla: dict[str, int]  # SlaStatus value -> pending requests
    oldest_requested_at: datetime.datetime | None

    @property
    def past_due(self) -> int:
        """Waiting past their SLA: overdue, and expired but not yet closed by the sweep."""
        return self.by_sla.get(SlaStatus.OVERDUE, 0) + self.by_sla.get(SlaStatus.EXPIRED, 0)

    @property
    def states(self) -> list[tuple[str, str, int]]:
        order = (SlaStatus.ON_TIME, SlaStatus.DUE_SOON, SlaStatus.OVERDUE, SlaStatus.EXPIRED)
        return [(state, SlaStatus.LABELS[state], self.by_sla.get(state, 0)) for state in order]


@dataclass(frozen=True)
class OwnerStale:
    owner: User
    stale: int
    excluded: int  # of those, kept from agents (stale policy "exclude")
    oldest_due: datetime.date | None

    @property
    def warned(self) -> int:
        """Stale but still used by agents, with a stale warning in the trace (policy "warn")."""
        return self.stale - self.excluded


@dataclass
class StalePanel:
    owners: list[OwnerStale]

    @property
    def total(self) -> int:
        return sum(owner.stale for owner in self.owners)


@dataclass(frozen=True)
class UnusedRoleGrant:
    role: str
    tool: str
    days_unused: int


@dataclass
class GrantsPanel:
    """From the tools app's "permissions granted vs used" report, for this tenant."""

    unused_after_days: int
    never_used: dict[int, list[str]]  # agent id -> allowlisted tools it never executed
    shows_agents: bool  # False: the person may read grants but not tool calls
    unused_role_grants: list[UnusedRoleGrant]


@dataclass(frozen=True)
class RuleCount:
    rule: str
    kills: int


@dataclass
class KillsPanel:
    by_day: list[tuple[datetime.date, int]]
    by_rule: list[RuleCount]

    @property
    def total(self) -> int:
        return sum(kills for _day, kills in self.by_day)


@dataclass(frozen=True)
class AgentRow:
    agent: Agent
    owner_problem: str  # "" when the agent has an owner in good standing
    never_used_tools: list[str]  # allowlisted tools the agent never executed (when grants are shown)


@dataclass
class Dashboard:
    tenant: Tenant
    period: Period
    agents: list[AgentRow]
    accuracy: AccuracyPanel | None = None
    turns: TurnsPanel | None = None
    gap_topics: list[KnowledgeGap] | None = None
    handoffs: HandoffsPanel | None = None
    overrides: OverridesPanel | None = None
    tools: ToolsPanel | None = None
    approvals: ApprovalsPanel | None = None
    stale: StalePanel | None = None
    grants: GrantsPanel | None = None
    kills: KillsPanel | None = None
    hidden: list[str] = field(default_factory=list)  # panels the person's roles do not show

    @property
    def agents_without_owner(self) -> list[AgentRow]:
        return [row for row in self.agents if row.owner_problem]

    @property
    def agents_with_unused_tools(self) -> list[AgentRow]:
        return [row for row in self.agents if row.never_used_tools]


def owner_problem(agent: Agent) -> str:
    """Why the agent has, in effect, no owner: "" when its owner is an active person who
    still holds a role in the agent's tenant (what ``Agent.clean`` requires at saving)."""
    if not agent.owner.is_active:
        return "owner's account is inactive"
    if not agent.owner_holds_role:
        return "owner holds no role in this tenant"
    return ""


# --- Reads ----------------------------------------------------------------------------------------


def governance_dashboard(
    *, user: User, tenant: Tenant, days: int = DEFAULT_PERIOD, now: datetime.datetime | None = None
) -> Dashboard:
    """Every panel of the dashboard for ``tenant`` over the last ``days`` days. The caller
    has checked that ``user`` holds a role in ``tenant``; what each panel needs beyond that
    is checked here."""
    now = now or timezone.now()
    period = period_ending(now, days)
    may = {panel: has_tenant_permission(user, tenant.pk, perm) for panel, perm in PANEL_PERMISSIONS.items()}
    agents = _agents(user, tenant, with_latest_run=may["accuracy"])
    grants = _grants(user, tenant, now)
    dashboard = Dashboard(
        tenant=tenant,
        period=period,
        agents=[
            AgentRow(agent, owner_problem(agent), grants.never_used.get(agent.pk, []) if grants else [])
            for agent in agents
        ],
        grants=grants,
    )
    dashboard.hidden = [panel for panel, allowed in may.items() if not allowed] + ([] if grants else ["grants"])

    if may["accuracy"]:
        dashboard.accuracy = _accuracy(agents)
    turn_counts = _turn_counts(tenant, period) if may["turns"] or may["handoffs"] else None
    if may["turns"]:
        dashboard.turns = _turns_panel(turn_counts, period)
    if may["gap_topics"]:
        dashboard.gap_topics = list(
            KnowledgeGap.objects.filter(tenant=tenant, last_seen__gte=period.start).order_by(
                "-occurrences", "-last_seen", "topic"
            )[:TOP_GAP_TOPICS]
        )
    if may["handoffs"]:
        dashboard.handoffs = _handoffs(tenant, period, finished_turns=sum(row["turns"] for row in turn_counts))
    if may["approval_overrides"] or may["review_overrides"]:
        dashboard.overrides = _overrides(tenant, period, may["approval_overrides"], may["review_overrides"])
    if may["tools"]:
        dashboard.tools = _tool_failures(tenant, period)
    if may["approvals"]:
        dashboard.approvals = _pending_approvals(tenant, now)
    if may["stale"]:
        dashboard.stale = _stale_sources(tenant, timezone.localdate(now))
    if may["kills"]:
        dashboard.kills = _kills(tenant, period)
    return dashboard


def _agents(user: User, tenant: Tenant, *, with_latest_run: bool) -> list[Agent]:
    """The tenant's agents the person may see, each with whether its owner still holds a role
    in the tenant and (when asked) the id of its latest completed evaluation run: one query."""
    owner_membership = Membership.objects.filter(user_id=OuterRef("owner_id"), role__tenant_id=OuterRef("tenant_id"))
    agents = agents_visible_to(user).filter(tenant=tenant).annotate(owner_holds_role=Exists(owner_membership))
    if with_latest_run:
        latest = (
            EvalRun.objects.filter(agent_id=OuterRef("pk"), status=RunStatus.COMPLETED)
            .order_by(F("finished_at").desc(nulls_last=True), "-pk")
            .values("pk")[:1]
        )
        agents = agents.annotate(latest_run_id=Subquery(latest))
    return list(agents)


def _category_rates(entries: dict[str, dict]) -> list[CategoryRate]:
    """{category: {"cases", "passed"}} as rates, in the order the categories are defined."""
    labels = dict(Category.choices)
    order = [*Category.values, *sorted(set(entries) - set(Category.values))]
    return [
        CategoryRate(
            category, labels.get(category, category), Rate(entries[category]["passed"], entries[category]["cases"])
        )
        for category in order
        if category in entries and entries[category].get("cases")
    ]


def _accuracy(agents: list[Agent]) -> AccuracyPanel:
    """Each agent's latest completed run, its overall and per-category pass rates, and the
    per-category rates pooled over those runs (cases passed of cases run, not an average of
    rates)."""
    run_ids = [agent.latest_run_id for agent in agents if agent.latest_run_id]
    runs = EvalRun.objects.in_bulk(run_ids)
    pooled: dict[str, dict] = defaultdict(lambda: {"cases": 0, "passed": 0})
    rows = []
    for agent in agents:
        run = runs.get(agent.latest_run_id)
        if run is None:
            continue
        entries = {
            category: {"cases": int(entry.get("cases", 0)), "passed": int(entry.get("passed", 0))}
            for category, entry in (run.category_rates or {}).items()
            if isinstance(entry, dict)
        }
        for category, entry in entries.items():
            pooled[category]["cases"] += entry["cases"]
            pooled[category]["passed"] += entry["passed"]
        rows.append(AgentAccuracy(agent=agent, run=run, categories=_category_rates(entries)))
    categories = _category_rates(pooled)
    for row in rows:
        own = {entry.category: entry.rate for entry in row.categories}
        row.columns = [own.get(entry.category) for entry in categories]
    return AccuracyPanel(agents=rows, categories=categories, without_run=len(agents) - len(rows))


def _turn_counts(tenant: Tenant, period: Period) -> list[dict]:
    """Real turns (not evaluation runs') received in the period and finished, per day
    received and decision, with how many were grounded answers and knowledge-gap fallbacks:
    one grouped query.

    By arrival (``created_at``), not by finishing time: the (tenant, created_at) index then
    bounds the read to the period, so the page costs the same after years of history. (A turn
    may wait for an approval for as long as the tool's SLA says, so no finishing-time bound
    could be derived from arrival.) A turn still running is counted once it finishes."""
    return list(
        Turn.objects.filter(
            _within(period, "created_at"),
            tenant=tenant,
            conversation__evaluation=False,
            status__in=FINISHED_STATUSES,
        )
        .annotate(day=TruncDate("created_at"))
        .values("day", "decision")
        .annotate(
            turns=Count("pk"),
            grounded=Count("pk", filter=Q(decision=Decision.ANSWER, decision_reason=GROUNDED)),
            gaps=Count("pk", filter=Q(decision=Decision.FALLBACK, decision_reason=KNOWLEDGE_GAP)),
        )
        .order_by()
    )


def _turns_panel(rows: list[dict], period: Period) -> TurnsPanel:
    by_day: dict[datetime.date, Counter] = defaultdict(Counter)
    by_decision: Counter = Counter()
    grounded = gaps = 0
    for row in rows:
        by_day[row["day"]][row["decision"]] += row["turns"]
        by_decision[row["decision"]] += row["turns"]
        grounded += row["grounded"]
        gaps += row["gaps"]
    finished = sum(by_decision.values())
    return TurnsPanel(
        finished=finished,
        by_decision=dict(by_decision),
        by_day=[DayDecisions(day, dict(by_day.get(day, {}))) for day in period.dates],
        grounded=Rate(grounded, finished),
        fallback=Rate(by_decision.get(Decision.FALLBACK, 0), finished),
        knowledge_gap=Rate(gaps, finished),
    )


def _handoffs(tenant: Tenant, period: Period, *, finished_turns: int) -> HandoffsPanel:
    """Handoffs created in the period, by reason code, each against the period's real turns.
    (An evaluation run never hands a conversation to anyone: the runtime records "would hand
    off" in its trace instead, so every handoff row is production traffic.)"""
    rows = (
        Handoff.objects.filter(_within(period, "created_at"), tenant=tenant)
        .values("reason_code")
        .annotate(handoffs=Count("pk"))
        .order_by("-handoffs", "reason_code")
    )
    by_reason = [
        ReasonCount(row["reason_code"], row["handoffs"], Rate(row["handoffs"], finished_turns)) for row in rows
    ]
    total = sum(row.handoffs for row in by_reason)
    return HandoffsPanel(total=total, rate=Rate(total, finished_turns), by_reason=by_reason)


def _overrides(tenant: Tenant, period: Period, approvals: bool, reviews: bool) -> OverridesPanel:
    """How often a person overrode an agent: approval requests its tool calls raised that a
    person rejected, of those a person decided in the period; and reviews of real turns in
    the period where the person did not agree, accept, or find the agent right."""
    panel = OverridesPanel(approvals=None, reviews=None, review_kinds=[])
    if approvals:
        decided = ApprovalRequest.objects.filter(
            _within(period, "decided_at"), tenant=tenant, agent__isnull=False
        ).aggregate(decided=Count("pk"), rejected=Count("pk", filter=Q(status=ApprovalStatus.REJECTED)))
        panel.approvals = Rate(decided["rejected"], decided["decided"])
    if reviews:
        rows = (
            TurnReview.objects.filter(
                _within(period, "reviewed_at"), tenant=tenant, turn__conversation__evaluation=False
            )
            .values("kind")
            .annotate(reviewed=Count("pk"), overridden=Count("pk", filter=OVERRIDDEN))
            .order_by()
        )
        counts = {row["kind"]: row for row in rows}
        panel.review_kinds = [
            ReviewKindCount(kind, label, Rate(counts[kind]["overridden"], counts[kind]["reviewed"]))
            for kind, label in ReviewKind.choices
            if kind in counts
        ]
        panel.reviews = Rate(
            sum(row["overridden"] for row in counts.values()), sum(row["reviewed"] for row in counts.values())
        )
    return panel


def _tool_failures(tenant: Tenant, period: Period) -> ToolsPanel:
    """Calls asked for in the period that ran, by tool: failed of executed + failed. Calls
    that never ran (denied, proposed, waiting for approval) are not in the rate."""
    rows = (
        ToolCall.objects.filter(
            _within(period, "created_at"), tenant=tenant, outcome__in=(Outcome.EXECUTED, Outcome.FAILED)
        )
        .values("tool_name")
        .annotate(ran=Count("pk"), failed=Count("pk", filter=Q(outcome=Outcome.FAILED)))
        .order_by()
    )
    by_tool = sorted(
        (ToolFailures(row["tool_name"], Rate(row["failed"], row["ran"])) for row in rows),
        key=lambda entry: (-entry.failed.part, -(entry.failed.value or 0), entry.tool_name),
    )
    return ToolsPanel(
        failed=Rate(sum(entry.failed.part for entry in by_tool), sum(entry.failed.whole for entry in by_tool)),
        by_tool=by_tool,
    )


def _pending_approvals(tenant: Tenant, now: datetime.datetime) -> ApprovalsPanel:
    """Requests waiting for a decision now, by SLA state as the approval queue shows it
    (``sla_status``, applied to each). The pending set stays small whatever the history: a
    request leaves it when decided, or when the expiry sweep closes it after its SLA and grace
    period, so only a few hours of requests are ever read here."""
    rows = ApprovalRequest.objects.filter(tenant=tenant, status=ApprovalStatus.PENDING).values_list(
        "due_at", "expires_at", "created_at"
    )
    by_sla: Counter = Counter()
    oldest = None
    for due_at, expires_at, created_at in rows.order_by():
        by_sla[sla_status(ApprovalStatus.PENDING, due_at, expires_at, now)] += 1
        oldest = created_at if oldest is None else min(oldest, created_at)
    return ApprovalsPanel(pending=sum(by_sla.values()), by_sla=dict(by_sla), oldest_requested_at=oldest)


def _stale_sources(tenant: Tenant, today: datetime.date) -> StalePanel:
    """Approved sources overdue for review, by owner, most first: one grouped query, then the
    owners (one more)."""
    rows = list(
        KnowledgeSource.objects.filter(tenant=tenant)
        .overdue(today)
        .values("owner_id")
        .annotate(
            stale=Count("pk"),
            excluded=Count("pk", filter=Q(stale_policy=StalePolicy.EXCLUDE)),
            oldest_due=Min("review_due_on"),
        )
        .order_by()
    )
    owners = User.objects.in_bulk([row["owner_id"] for row in rows])
    entries = [
        OwnerStale(owners[row["owner_id"]], row["stale"], row["excluded"], row["oldest_due"])
        for row in rows
        if row["owner_id"] in owners
    ]
    entries.sort(key=lambda entry: (-entry.stale, str(entry.owner)))
    return StalePanel(owners=entries)


def _grants(user: User, tenant: Tenant, now: datetime.datetime) -> GrantsPanel | None:
    """The tools app's usage report for this one tenant: allowlisted tools each agent never
    executed, and role grants unused for the report's number of days. None when the person
    may not read the tenant's grants."""
    report = grant_usage_report(user, days=UNUSED_AFTER_DAYS, now=now, tenant_id=tenant.pk)
    if not report.tenants:
        return None
    usage = report.tenants[0]
    never_used = {
        entry.agent.pk: [use.allowance.tool.name for use in entry.allowed if use.never_used] for entry in usage.agents
    }
    unused = [
        UnusedRoleGrant(role.role.name, use.grant.tool.name, use.days_unused)
        for role in usage.roles
        for use in role.grants
        if use.unused
    ]
    return GrantsPanel(
        unused_after_days=report.days,
        never_used={agent_id: tools for agent_id, tools in never_used.items() if tools},
        shows_agents=usage.shows_agents,
        unused_role_grants=sorted(unused, key=lambda grant: (-grant.days_unused, grant.role, grant.tool)),
    )


def _kills(tenant: Tenant, period: Period) -> KillsPanel:
    """Input guardrail kill verdicts in the period, per day and by rule: one grouped query.
    (An evaluation run's kill is never recorded, so none of these is a test.)"""
    rows = (
        KillVerdict.objects.filter(_within(period, "created_at"), tenant=tenant)
        .annotate(day=TruncDate("created_at"))
        .values("day", "rule")
        .annotate(kills=Count("pk"))
        .order_by()
    )
    by_day: Counter = Counter()
    by_rule: Counter = Counter()
    for row in rows:
        by_day[row["day"]] += row["kills"]
        by_rule[row["rule"]] += row["kills"]
    return KillsPanel(
        by_day=[(day, by_day.get(day, 0)) for day in period.dates],
        by_rule=[
            RuleCount(rule, kills) for rule, kills in sorted(by_rule.items(), key=lambda item: (-item[1], item[0]))
        ],
    )
