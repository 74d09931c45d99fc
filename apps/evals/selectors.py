"""What the /evals pages read: the agents a person may see with their latest runs, gates and
suites; a suite's cases in words; a run's results; an agent's gates with their history; and
what a review panel shows beside a real turn.

Relations are chosen once here. A page costs the same number of queries whatever the number
of runs, cases or results; the overview adds the gate report's few queries per agent (the
gate is the service's rule, read through ``services.gate_report``, not restated here).
"""

import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Count, F, Q, QuerySet, Window
from django.db.models.functions import RowNumber

from apps.accounts.permissions import has_tenant_permission, tenant_ids_with_permission
from apps.agents.choices import ROLLOUT_ORDER, RolloutMode
from apps.agents.models import Agent
from apps.knowledge.models import KnowledgeSource
from apps.runtime.choices import FINISHED_STATUSES, Decision
from apps.runtime.models import Turn

from . import services
from .choices import Category, GateMetric, ReviewKind, RunStatus
from .models import EvalCase, EvalResult, EvalRun, EvalSuite, RolloutGate, TurnReview

VIEW_RUNS = "evals.view_evalrun"
VIEW_SUITES = "evals.view_evalsuite"
VIEW_GATES = "evals.view_rolloutgate"
RUN_SUITES = "evals.add_evalrun"
ADD_CASES = "evals.add_evalcase"
EDIT_GATES = "evals.change_rolloutgate"
CHANGE_AGENTS = "agents.change_agent"
REVIEW_TURNS = "evals.add_turnreview"
VIEW_TURNS = "runtime.view_turn"
COMPARE_CHOICES = 50  # earlier runs offered in "Compare with"

# What the gateway would have done with a call, in words (``scoring.WOULD`` and outcomes).
WOULD_LABELS = {
    "execute": "would run it",
    "approval": "would wait for a person's approval",
    "denied": "would deny it",
    "proposed": "would only record the proposal (shadow)",
    "needs_approval": "would wait for a person's approval",
}


def mode_label(mode: str) -> str:
    """ "Suggest" rather than "Suggest (proposes, a human acts)"."""
    return RolloutMode(mode).label.split(" (")[0] if mode in RolloutMode.values else mode


def category_label(category: str) -> str:
    return Category(category).label if category in Category.values else category


def category_order(category: str) -> int:
    """Categories in the order ``Category`` lists them (grounding first), unknown ones last."""
    return Category.values.index(category) if category in Category.values else len(Category.values)


def may_anywhere(user, permission: str) -> bool:
    allowed = tenant_ids_with_permission(user, permission)
    return allowed is None or bool(allowed)


def _allows(allowed: set[int] | None, tenant_id: int) -> bool:
    return allowed is None or tenant_id in allowed


def source_titles(tenant_id: int, ids) -> dict[int, str]:
    """{source id: title} for the ids of one tenant that still exist (one query)."""
    wanted = {source_id for source_id in ids if isinstance(source_id, int)}
    if not wanted:
        return {}
    return dict(KnowledgeSource.objects.filter(tenant_id=tenant_id, pk__in=wanted).values_list("pk", "title"))


def titled(source_id, titles: dict[int, str]) -> str:
    title = titles.get(source_id)
    return f"#{source_id} {title}" if title else f"#{source_id} (no such source now)"


# --- The overview (/evals/) ----------------------------------------------------------------


@dataclass
class SuiteCell:
    """One of an agent's suites on the overview: its latest run for that agent, and whether
    this person may run it now."""

    suite: EvalSuite
    latest_run: EvalRun | None
    may_run: bool


@dataclass
class AgentOverview:
    agent: Agent
    prompt_version: int | None
    model: str
    latest_run: EvalRun | None
    next_mode: str | None
    gate: services.GateReport | None
    suites: list[SuiteCell] = field(default_factory=list)

    @property
    def next_mode_label(self) -> str:
        return mode_label(self.next_mode) if self.next_mode else ""


def visible_agents(user, permission: str = VIEW_RUNS) -> QuerySet[Agent]:
    return Agent.objects.for_user(user, permission).with_inventory_relations().order_by("tenant__name", "name")


def visible_suites(user) -> QuerySet[EvalSuite]:
    return (
        EvalSuite.objects.for_user(user, VIEW_SUITES)
        .select_related("tenant", "agent", "run_as")
        .annotate(active_cases=Count("cases", filter=Q(cases__is_active=True)))
        .order_by("tenant__name", "name")
    )


def visible_runs(user) -> QuerySet[EvalRun]:
    return EvalRun.objects.for_user(user, VIEW_RUNS)


def latest_runs_by_pair(user, agent_ids) -> dict[tuple[int, int], EvalRun]:
    """{(suite id, agent id): that pair's latest run} in one query (a window over the runs)."""
    ranked = (
        visible_runs(user)
        .filter(agent_id__in=agent_ids)
        .select_related("suite")
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("suite_id"), F("agent_id")],
                order_by=[F("created_at").desc(), F("pk").desc()],
            )
        )
        .filter(rank=1)
    )
    return {(run.suite_id, run.agent_id): run for run in ranked}


def overview(user) -> tuple[list[AgentOverview], list[EvalSuite]]:
    """Each agent ``user`` may see evaluations of, with its setup, latest run, the gate into
    its next mode and its suites; and every suite ``user`` may see."""
    agents = list(visible_agents(user))
    suites = list(visible_suites(user))
    latest = latest_runs_by_pair(user, [agent.pk for agent in agents])
    latest_per_agent: dict[int, EvalRun] = {}
    for run in latest.values():
        current = latest_per_agent.get(run.agent_id)
        if current is None or (run.created_at, run.pk) > (current.created_at, current.pk):
            latest_per_agent[run.agent_id] = run
    may_run = tenant_ids_with_permission(user, RUN_SUITES)
    suites_by_tenant: dict[int, list[EvalSuite]] = defaultdict(list)
    for suite in suites:
        suites_by_tenant[suite.tenant_id].append(suite)
    evidence = services.evidence_for_agents(agents)
    rows = []
    for agent in agents:
        index = ROLLOUT_ORDER.index(agent.rollout_mode)
        next_mode = ROLLOUT_ORDER[index + 1] if index + 1 < len(ROLLOUT_ORDER) else None
        row = AgentOverview(
            agent=agent,
            prompt_version=services.current_prompt_number(agent),
            model=services.model_identity(agent),
            latest_run=latest_per_agent.get(agent.pk),
            next_mode=next_mode,
            gate=services.gate_report(agent, next_mode, evidence[agent.pk]) if next_mode else None,
        )
        for suite in suites_by_tenant[agent.tenant_id]:
            if suite.agent_id in (None, agent.pk):  # EvalSuite.objects.for_agent, on rows already read
                row.suites.append(
                    SuiteCell(
                        suite=suite,
                        latest_run=latest.get((suite.pk, agent.pk)),
                        may_run=suite.is_active and suite.active_cases > 0 and _allows(may_run, agent.tenant_id),
                    )
                )
        rows.append(row)
    return rows, suites


# --- One suite -----------------------------------------------------------------------------


@dataclass
class CaseRow:
    case: EvalCase
    expectations: list[str]
    setup: list[str]


@dataclass
class CategoryGroup:
    category: str
    label: str
    cases: list[CaseRow]


def suite_for_page(user, suite_id: int) -> EvalSuite:
    """Raises EvalSuite.DoesNotExist for a suite ``user`` may not see."""
    return visible_suites(user).get(pk=suite_id)


def expectations_in_words(case: EvalCase, titles: dict[int, str]) -> list[str]:
    """What the case checks, one sentence each, in the order a reader would ask."""
    said = []
    if case.expected_decision:
        code = case.expected_decision
        label = Decision(code).label.lower() if code in Decision.values else code
        said.append(f"Decision: {code}" + (f" ({label})." if label != code else "."))
    said += [f"Cites source {titled(source, titles)}." for source in case.must_cite]
    said += [f"Does not cite source {titled(source, titles)}." for source in case.must_not_cite]
    said += [f"Asks for {tool}." for tool in case.must_call]
    said += [f"Does not ask for {tool}." for tool in case.must_not_call]
    said += [f"The gateway would run {tool} without a person." for tool in case.must_execute]
    said += [
        f"The gateway would not run {tool} without a person (denied, or a person decides)."
        for tool in case.must_not_execute
    ]
    said += [f"The reply contains “{text}”." for text in case.must_include]
    said += [f"The reply does not contain “{text}”." for text in case.must_not_include]
    return said


def setup_in_words(case: EvalCase) -> list[str]:
    """Who the case's turn is about, and what a tool answers in it."""
    said = []
    subject = case.subject or {}
    if subject:
        who = subject.get("subject") or "an unnamed customer"
        verified = " (identity verified)" if subject.get("subject_verified") else ""
        more = ", ".join(
            f"{key} {subject[key]}" for key in ("region", "segment", "plan", "brand", "audience") if subject.get(key)
        )
        said.append(f"About {who}{verified}" + (f"; {more}." if more else "."))
    for tool, result in (case.simulated_tool_results or {}).items():
        status = result.get("status", "executed")
        message = result.get("message") or ""
        said.append(f"If the gateway would run {tool}, it answers: {status}" + (f" ({message})." if message else "."))
    return said


def suite_cases(suite: EvalSuite) -> list[CategoryGroup]:
    """The suite's cases grouped by category (in the categories' order), each with what it
    expects in words; source ids come with their titles (one query for all of them)."""
    cases = list(suite.cases.order_by("category", "name"))
    titles = source_titles(
        suite.tenant_id, [source for case in cases for source in (*case.must_cite, *case.must_not_cite)]
    )
    grouped: dict[str, list[CaseRow]] = defaultdict(list)
    for case in cases:
        grouped[case.category].append(CaseRow(case, expectations_in_words(case, titles), setup_in_words(case)))
    present = sorted(grouped, key=lambda category: (category_order(category), category))
    return [CategoryGroup(category, category_label(category), grouped[category]) for category in present]


def suite_runs(user, suite: EvalSuite) -> QuerySet[EvalRun]:
    return visible_runs(user).filter(suite=suite).select_related("agent", "started_by").order_by("-created_at", "-pk")


def agents_to_run(user, suite: EvalSuite) -> list[Agent]:
    """The agents ``user`` may run ``suite`` for: its own, or (a shared suite) the tenant's
    active agents. Empty when the person may not run suites in its tenant."""
    if not has_tenant_permission(user, suite.tenant_id, RUN_SUITES) or not suite.is_active:
        return []
    agents = Agent.objects.filter(tenant_id=suite.tenant_id, status="active").order_by("name")
    if suite.agent_id:
        agents = agents.filter(pk=suite.agent_id)
    return list(agents)


# --- One run -------------------------------------------------------------------------------


@dataclass
class CategoryRate:
    category: str
    label: str
    cases: int
    passed: int
    rate: float

    @property
    def percent(self) -> float:
        return round(self.rate * 100, 1)


@dataclass
class ResultRow:
    result: EvalResult
    cited: list[str]
    tool_calls: list[dict]


def run_for_page(user, run_id: int) -> EvalRun:
    """Raises EvalRun.DoesNotExist for a run ``user`` may not see."""
    return visible_runs(user).select_related("suite", "agent", "tenant", "started_by").get(pk=run_id)


def run_results(run: EvalRun) -> list[ResultRow]:
    """The run's results by category and case, each with the sources it cited (titled) and
    its tool calls with what the gateway would have done (two queries)."""
    results = sorted(run.results.all(), key=lambda result: (category_order(result.category), result.case_name))
    titles = source_titles(run.tenant_id, [source for result in results for source in result.cited])
    rows = []
    for result in results:
        calls = [
            {**call, "would_label": WOULD_LABELS.get(call.get("would", ""), call.get("would", ""))}
            for call in result.tool_calls
        ]
        rows.append(ResultRow(result, [titled(source, titles) for source in result.cited], calls))
    return rows


def category_rates(run: EvalRun, rows: list[ResultRow]) -> list[CategoryRate]:
    """Per category: cases, passed, rate. A finished run's stored rates; while it runs, the
    results so far (the same sum, ``services.category_rates``)."""
    if run.status == RunStatus.COMPLETED and run.category_rates:
        rates = run.category_rates
    else:
        rates = services.category_rates([(row.result.category, row.result.status) for row in rows])
    return [
        CategoryRate(category, category_label(category), entry["cases"], entry["passed"], entry["rate"])
        for category, entry in sorted(rates.items(), key=lambda item: category_order(item[0]))
    ]


def earlier_runs(user, run: EvalRun) -> list[EvalRun]:
    """Completed runs of the same suite and agent before ``run``, newest first."""
    return list(
        visible_runs(user)
        .filter(suite_id=run.suite_id, agent_id=run.agent_id, status=RunStatus.COMPLETED)
        .filter(Q(created_at__lt=run.created_at) | Q(created_at=run.created_at, pk__lt=run.pk))
        .exclude(pk=run.pk)
        .order_by("-created_at", "-pk")[:COMPARE_CHOICES]
    )


# --- Comparing two runs --------------------------------------------------------------------

CHANGE_ORDER = ("regression", "fixed", "new", "removed", "unchanged")
CHANGE_LABELS = {
    "regression": "Regressions (passed before, not now)",
    "fixed": "Fixed (failed before, pass now)",
    "new": "New cases",
    "removed": "Removed cases",
    "unchanged": "Unchanged",
}


@dataclass
class ChangeGroup:
    change: str
    label: str
    changes: list[services.CaseChange]


def compare(earlier: EvalRun, later: EvalRun) -> list[ChangeGroup]:
    """``services.compare_runs`` grouped in its order: regressions first."""
    grouped: dict[str, list[services.CaseChange]] = defaultdict(list)
    for change in services.compare_runs(earlier, later):
        grouped[change.change].append(change)
    return [ChangeGroup(change, CHANGE_LABELS[change], grouped[change]) for change in CHANGE_ORDER]


# --- An agent's gates ----------------------------------------------------------------------


@dataclass
class GateRow:
    mode: str
    label: str
    gate: RolloutGate
    edited: bool
    report: services.GateReport

    @property
    def metric_label(self) -> str:
        return GateMetric(self.gate.metric).label


@dataclass
class GateVersion:
    """One saved version of a gate, with what it changed from the version before."""

    record: object  # a historical RolloutGate row
    mode_label: str
    changes: list[str]


def agent_for_gates(user, agent_id: int) -> Agent:
    """Raises Agent.DoesNotExist for an agent whose gates ``user`` may not see."""
    return visible_agents(user, VIEW_GATES).get(pk=agent_id)


def gates(agent: Agent) -> list[GateRow]:
    """The gate into each mode above shadow, default or edited, with its report."""
    evidence = services.evidence_for(agent)
    rows = []
    for mode in ROLLOUT_ORDER[1:]:
        gate = services.gate_for(agent, mode, evidence.gates)
        report = services.gate_report(agent, mode, evidence)
        rows.append(GateRow(mode, mode_label(mode), gate, gate.pk is not None, report))
    return rows


GATE_HISTORY_FIELDS = (
    ("metric", "metric"),
    ("threshold", "threshold"),
    ("min_reviews", "minimum reviews"),
    ("min_pass_rate", "minimum pass rate"),
)


def gate_history(agent: Agent) -> list[GateVersion]:
    """Every saved version of the agent's gates, newest first: who, when, why and what
    changed (one query)."""
    records = list(
        RolloutGate.history.filter(agent_id=agent.pk)
        .select_related("history_user")
        .order_by("history_date", "history_id")
    )
    previous: dict[str, object] = {}
    versions = []
    for record in records:
        before = previous.get(record.target_mode)
        changes = []
        for name, label in GATE_HISTORY_FIELDS:
            value = getattr(record, name)
            shown = GateMetric(value).label if name == "metric" and value in GateMetric.values else value
            if before is None:
                changes.append(f"{label} {shown}")
            elif getattr(before, name) != value:
                was = getattr(before, name)
                was_shown = GateMetric(was).label if name == "metric" and was in GateMetric.values else was
                changes.append(f"{label} {was_shown} → {shown}")
        previous[record.target_mode] = record
        versions.append(GateVersion(record, mode_label(record.target_mode), changes))
    return versions[::-1]


def mode_choices(agent: Agent) -> tuple[str | None, list[tuple[str, str]]]:
    """(the next, more autonomous mode or None, the less autonomous modes as choices)."""
    index = ROLLOUT_ORDER.index(agent.rollout_mode)
    next_mode = ROLLOUT_ORDER[index + 1] if index + 1 < len(ROLLOUT_ORDER) else None
    lower = [(mode, RolloutMode(mode).label) for mode in reversed(ROLLOUT_ORDER[:index])]
    return next_mode, lower


# --- Real turns: making a case, and reviews ------------------------------------------------


def turn_for_page(user, turn_id) -> Turn:
    """A real (not evaluation) turn ``user`` may read. Raises Turn.DoesNotExist otherwise."""
    return (
        Turn.objects.for_user(user, VIEW_TURNS)
        .select_related("conversation", "agent", "tenant")
        .get(pk=turn_id, conversation__evaluation=False)
    )


def suites_for_new_case(user, turn: Turn) -> QuerySet[EvalSuite]:
    """Active suites that evaluate the turn's agent, where ``user`` may add cases."""
    return (
        EvalSuite.objects.for_user(user, ADD_CASES)
        .for_agent(turn.agent)
        .filter(is_active=True)
        .select_related("agent")
        .order_by("name")
    )


def review_kind(turn: Turn) -> str:
    """What a review of this turn measures, by the mode the agent was in when it ran."""
    if turn.rollout_mode == RolloutMode.SHADOW:
        return ReviewKind.SHADOW
    if turn.rollout_mode == RolloutMode.SUGGEST:
        return ReviewKind.SUGGESTION
    return ReviewKind.POST_HOC


@dataclass
class ReviewPanel:
    turn: Turn
    kind: str
    kind_label: str
    agent_action: str
    action_choices: list[str]
    review: TurnReview | None


def review_panel(turn: Turn, steps=None, *, memo: dict | None = None) -> ReviewPanel:
    """What the review panel shows for a finished real turn: what the agent proposed, what a
    person may say they did (shadow), and the review already recorded, if any.

    ``memo`` (a dict kept for one page): the reviews of every turn of the conversation and
    each agent's action choices are read once, however many turns the page shows."""
    kind = review_kind(turn)
    if memo is None:
        review = TurnReview.objects.filter(turn=turn, kind=kind).select_related("reviewed_by").first()
        choices = services.action_choices(turn.agent) if kind == ReviewKind.SHADOW else []
    else:
        reviews = memo.setdefault("reviews", {})
        if turn.conversation_id not in reviews:
            rows = TurnReview.objects.filter(turn__conversation_id=turn.conversation_id).select_related("reviewed_by")
            reviews[turn.conversation_id] = {(row.turn_id, row.kind): row for row in rows}
        review = reviews[turn.conversation_id].get((turn.pk, kind))
        choices = []
        if kind == ReviewKind.SHADOW:
            by_agent = memo.setdefault("action_choices", {})
            if turn.agent_id not in by_agent:
                by_agent[turn.agent_id] = services.action_choices(turn.agent)
            choices = by_agent[turn.agent_id]
    return ReviewPanel(
        turn=turn,
        kind=kind,
        kind_label=ReviewKind(kind).label,
        agent_action=services.agent_action_of(turn, steps),
        action_choices=choices,
        review=review,
    )


def reviewable_turn(user, turn_or_id) -> Turn | None:
    """The turn whose review panel ``user`` sees: finished, real, in a tenant where they may
    review turns. None when there is nothing to show them."""
    turn = turn_or_id if isinstance(turn_or_id, Turn) else None
    if turn is None:
        try:
            turn_id = uuid.UUID(str(turn_or_id))
        except ValueError:  # no turn (a handoff made outside one): nothing to review
            return None
        turn = Turn.objects.select_related("conversation", "agent").filter(pk=turn_id).first()
        if turn is None:
            return None
    if not has_tenant_permission(user, turn.tenant_id, REVIEW_TURNS):
        return None
    if turn.conversation.evaluation or turn.status not in FINISHED_STATUSES:
        return None
    return turn
