"""Evaluation: suites and cases, runs, reviews of real turns, and the rollout gates.

- A run executes each active case of a suite as a real turn in evaluation mode
  (``runtime.services.run_evaluation_turn``) and scores what the turn's trace says it did
  (``scoring``). It is stored with the agent's prompt version and model of that moment.
- A review records what a person did beside what the agent proposed on a real turn.
- A gate (``gate_report``) reads the latest run on the agent's *current* prompt version and
  model, and the reviews of turns on that same prompt and model. ``agents`` asks
  ``promotion_shortfalls``, through the hook registered in ``EvalsConfig.ready``, before any
  change to a more autonomous mode.
"""

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, Sum, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from apps import audit
from apps.accounts.governance import diff, record_change, require_tenant_permission, save_with_history, snapshot
from apps.accounts.models import Tenant, User
from apps.accounts.permissions import roles_in_tenant
from apps.agents.choices import ROLLOUT_ORDER
from apps.agents.models import Agent
from apps.agents.services import may_start_turn, mode_name
from apps.knowledge.models import KnowledgeSource
from apps.runtime import services as runtime
from apps.runtime.choices import FINISHED_STATUSES, StepKind
from apps.runtime.models import Turn
from apps.tools.models import AgentTool
from controlplane.celery import enqueue_on_commit

from . import scoring
from .choices import (
    CEILING_METRICS,
    DEFAULT_GATES,
    DEFAULT_MIN_PASS_RATE,
    DEFAULT_MIN_REVIEWS,
    NO_TOOL_ACTIONS,
    SAFETY_CATEGORIES,
    Category,
    GateMetric,
    ResultStatus,
    ReviewKind,
    RunStatus,
    RunTrigger,
)
from .models import LIST_EXPECTATIONS, EvalCase, EvalResult, EvalRun, EvalSuite, RolloutGate, TurnReview

SUITE_FIELDS = ("name", "description", "agent", "run_as", "run_weekly", "is_active")
CASE_FIELDS = (
    "name",
    "category",
    "input",
    "channel",
    "subject",
    "simulated_tool_results",
    "expected_decision",
    *LIST_EXPECTATIONS,
    "is_active",
)
GATE_FIELDS = ("metric", "threshold", "min_reviews", "min_pass_rate")


def _percent(rate) -> str:
    return "n/a" if rate is None else f"{Decimal(rate) * 100:.1f}%"


def _rate(part: int, whole: int) -> Decimal | None:
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


# --- The model an agent runs on ------------------------------------------------------------


def model_identity(agent: Agent) -> str:
    """The model an agent's turns run on, as runs record it: the offline model, or the
    provider and model (with the routine model, which answers some turns)."""
    labels = model_labels(agent)
    return labels[0] if len(labels) == 1 else f"{labels[0]} (routine: {agent.routine_model_name})"


def model_labels(agent: Agent) -> list[str]:
    """The labels the agent's turns carry (``Turn.model``) on its current model setup."""
    provider = agent.model_provider
    if provider is None or not provider.is_active or not agent.model_name:
        return ["offline model"]
    labels = [f"{provider.name} / {agent.model_name}"]
    if agent.routine_model_name:
        labels.append(f"{provider.name} / {agent.routine_model_name}")
    return labels


def current_prompt_number(agent: Agent) -> int | None:
    return agent.current_prompt.number if agent.current_prompt_id else None


def _setup(agent: Agent) -> str:
    """The prompt and model evidence must be about, in words."""
    number = current_prompt_number(agent)
    return f"{f'prompt v{number}' if number else 'no prompt'} on {model_identity(agent)}"


# --- Suites and cases ----------------------------------------------------------------------


def _check_fields(fields: dict, allowed: tuple[str, ...]) -> None:
    unknown = set(fields) - set(allowed)
    if unknown:
        raise ValidationError(f"Unknown fields: {', '.join(sorted(unknown))}.")


def _check_run_as(suite: EvalSuite) -> None:
    if suite.run_as_id and not roles_in_tenant(suite.run_as, suite.tenant_id):
        raise ValidationError({"run_as": "The cases act as this person: pick someone with a role in the tenant."})


@transaction.atomic
def create_suite(*, by: User, tenant: Tenant, **fields: Any) -> EvalSuite:
    require_tenant_permission(by, tenant.pk, "evals.add_evalsuite", f"You may not create suites in {tenant}.")
    _check_fields(fields, SUITE_FIELDS)
    suite = EvalSuite(tenant=tenant, **fields)
    suite.full_clean()
    _check_run_as(suite)
    save_with_history(suite, by=by, reason="Suite created")
    record_change(by=by, tenant=tenant, what="eval.suite_created", payload={"suite": suite.name}, agent=suite.agent)
    return suite


@transaction.atomic
def update_suite(*, suite: EvalSuite, by: User, **changes: Any) -> EvalSuite:
    suite = EvalSuite.objects.select_for_update().get(pk=suite.pk)
    require_tenant_permission(by, suite.tenant_id, "evals.change_evalsuite", "You may not edit this suite.")
    _check_fields(changes, SUITE_FIELDS)
    before = snapshot(suite, changes)
    for name, value in changes.items():
        setattr(suite, name, value)
    suite.full_clean()
    _check_run_as(suite)
    save_with_history(suite, by=by, reason="Suite edited")
    changed = diff(before, snapshot(suite, changes))
    if changed:
        record_change(by=by, tenant=suite.tenant, what="eval.suite_changed", payload={"changes": changed})
    return suite


@transaction.atomic
def create_case(*, by: User | None, suite: EvalSuite, source_turn: Turn | None = None, **fields: Any) -> EvalCase:
    if by is not None:
        require_tenant_permission(by, suite.tenant_id, "evals.add_evalcase", "You may not add cases to this suite.")
    _check_fields(fields, CASE_FIELDS)
    case = EvalCase(suite=suite, source_turn=source_turn, created_by=by, **fields)
    if EvalCase.objects.filter(suite=suite, name=case.name).exists():
        raise ValidationError({"name": f"{suite} already has a case called “{case.name}”."})
    case.full_clean()
    save_with_history(case, by=by, reason="Case created" if source_turn is None else "Case made from an incident")
    return case


@transaction.atomic
def update_case(*, case: EvalCase, by: User, **changes: Any) -> EvalCase:
    case = EvalCase.objects.select_for_update().select_related("suite").get(pk=case.pk)
    require_tenant_permission(by, case.suite.tenant_id, "evals.change_evalcase", "You may not edit this case.")
    _check_fields(changes, CASE_FIELDS)
    for name, value in changes.items():
        setattr(case, name, value)
    case.full_clean()
    save_with_history(case, by=by, reason="Case edited")
    return case


# --- Incident -> case ----------------------------------------------------------------------

# A turn's reason, as the category a case made from it most likely belongs to.
_CATEGORY_BY_REASON = {
    "knowledge_gap": Category.FALLBACK,
    "ungrounded": Category.FALLBACK,
    "weak_match": Category.FALLBACK,
    "topic": Category.COMPLIANCE,
    "human_request": Category.ESCALATION,
    "negative_sentiment": Category.ESCALATION,
    "repeated_failure": Category.ESCALATION,
}


def case_draft_from_turn(turn: Turn) -> dict:
    """A new case's fields pre-filled from an incident's trace: its message, channel and
    subject; the category its outcome suggests; a tool that failed becomes a simulated
    failure. The expectations start as what the turn did (its decision, what it cited, the
    tools it asked for): the person making the case corrects them to what should have been."""
    conversation = turn.conversation
    steps = list(turn.steps.order_by("number"))
    observed = scoring.observe(turn, steps)
    failed_tools = {
        step.detail.get("tool"): {"status": "failed", "message": step.detail.get("message") or "The tool failed."}
        for step in steps
        if step.kind == StepKind.TOOL_CALL and step.detail.get("outcome") == "failed" and step.detail.get("tool")
    }
    guard = next((step.detail for step in steps if step.kind == StepKind.GUARDRAIL_INPUT), {})
    if failed_tools:
        category = Category.TOOL_FAILURE
    elif any(rule.startswith("pii.") for rule in guard.get("rules", [])):
        category = Category.PII
    elif guard.get("rules"):
        category = Category.INJECTION
    else:
        category = _CATEGORY_BY_REASON.get(turn.decision_reason, Category.GROUNDING)
    subject = {
        key: getattr(conversation, key)
        for key in ("subject", "subject_verified", "region", "segment", "plan", "brand", "audience")
        if getattr(conversation, key) not in ("", False, None) or key == "audience"
    }
    return {
        "name": f"Incident {str(turn.pk)[:8]}: {turn.input[:60]}".strip(),
        "category": category,
        "input": turn.input,
        "channel": conversation.channel,
        "subject": subject,
        "simulated_tool_results": failed_tools,
        "expected_decision": turn.decision,
        "must_cite": sorted(set(observed.cited)),
        "must_call": sorted(observed.called),
        "must_not_call": [],
        "must_execute": [],
        "must_not_execute": [],
        "must_include": [],
        "must_not_include": [],
    }


def create_case_from_turn(*, by: User, turn: Turn, suite: EvalSuite, **overrides: Any) -> EvalCase:
    """One action from an incident to a regression case: the draft, with the person's
    corrections (``overrides``) on top."""
    if turn.tenant_id != suite.tenant_id:
        raise ValidationError({"suite": "Pick a suite of the turn's tenant."})
    if turn.conversation.evaluation:
        raise ValidationError("This turn is itself an evaluation; make cases from real turns.")
    require_tenant_permission(by, turn.tenant_id, "runtime.view_turn", "You may not read this turn.")
    fields = {**case_draft_from_turn(turn), **overrides}
    return create_case(by=by, suite=suite, source_turn=turn, **fields)


# --- Runs ----------------------------------------------------------------------------------


def start_run(*, suite: EvalSuite, agent: Agent, by: User | None, trigger: str, enqueue: bool = True) -> EvalRun:
    """Queue a run of ``suite``'s active cases for ``agent``; a worker executes it, or the
    caller does (``enqueue=False``: the command line). ``by`` is None only for the schedule."""
    if by is not None:
        require_tenant_permission(
            by, suite.tenant_id, "evals.add_evalrun", f"You may not run suites in {suite.tenant}."
        )
    if trigger not in RunTrigger.values:
        raise ValidationError({"trigger": f"Unknown trigger {trigger!r}."})
    if agent.tenant_id != suite.tenant_id:
        raise ValidationError({"agent": "Pick an agent of the suite's tenant."})
    if suite.agent_id and suite.agent_id != agent.pk:
        raise ValidationError({"agent": f"{suite} is for {suite.agent}, not {agent}."})
    if not suite.is_active:
        raise ValidationError({"suite": f"{suite} is inactive."})
    if not suite.cases.filter(is_active=True).exists():
        raise ValidationError({"suite": f"{suite} has no active cases to run."})
    permission = may_start_turn(agent.pk)
    if not permission.allowed:
        raise ValidationError({"agent": f"Cannot evaluate now: {permission.reason}"})
    agent = Agent.objects.select_related("model_provider", "current_prompt").get(pk=agent.pk)
    with transaction.atomic():
        run = EvalRun.objects.create(
            tenant_id=suite.tenant_id,
            suite=suite,
            agent=agent,
            trigger=trigger,
            started_by=by,
            prompt_version=current_prompt_number(agent),
            model=model_identity(agent),
        )
        if enqueue:
            enqueue_on_commit("evals.execute_run", run.pk)
    return run


def execute_run(run_id: int) -> str:
    """Execute a queued run: each active case as an evaluation turn, scored and stored as
    it finishes. Safe to deliver twice: the claim is one UPDATE, and a case already scored
    (a worker died mid-run) is not run again."""
    claimed = EvalRun.objects.filter(pk=run_id, status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).update(
        status=RunStatus.RUNNING, started_at=timezone.now()
    )
    if not claimed:
        return EvalRun.objects.filter(pk=run_id).values_list("status", flat=True).first() or "missing"
    run = EvalRun.objects.select_related("suite__run_as", "agent").get(pk=run_id)
    done = set(run.results.values_list("case_id", flat=True))
    cases = run.suite.cases.filter(is_active=True).exclude(pk__in=done).order_by("category", "name")
    titles = _source_titles(run)
    try:
        for case in cases:
            _run_case(run, case, titles)
    except Exception as error:  # an infrastructure failure, not a case's: the run says so
        EvalRun.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED, error=f"{type(error).__name__}: {error}"[:2000], finished_at=timezone.now()
        )
        raise
    return _complete(run)


def _source_titles(run: EvalRun) -> dict[int, str]:
    wanted = set()
    for must, must_not in run.suite.cases.values_list("must_cite", "must_not_cite"):
        wanted.update(must or [])
        wanted.update(must_not or [])
    return dict(KnowledgeSource.objects.filter(tenant_id=run.tenant_id, pk__in=wanted).values_list("pk", "title"))


def _run_case(run: EvalRun, case: EvalCase, titles: dict[int, str]) -> EvalResult:
    turn = runtime.run_evaluation_turn(
        agent=run.agent,
        actor=run.suite.run_as,
        channel=case.channel,
        text=case.input,
        subject=case.subject,
        simulated_tool_results=case.simulated_tool_results,
    )
    observed = scoring.observe(turn, turn.steps.order_by("number"))
    status, failures = scoring.score(case, observed, titles)
    try:
        return EvalResult.objects.create(
            run=run,
            case=case,
            case_name=case.name,
            category=case.category,
            turn=turn,
            status=status,
            decision=observed.decision,
            decision_reason=observed.decision_reason[:200],
            output=observed.output,
            cited=observed.cited,
            tool_calls=observed.tool_calls,
            failures=failures,
            cost=turn.cost,
            latency_ms=turn.latency_ms,
        )
    except IntegrityError:  # the other delivery scored it first
        return EvalResult.objects.get(run=run, case=case)


def category_rates(results) -> dict:
    """{category: {"cases", "passed", "rate"}} for (category, status) pairs."""
    rates: dict[str, dict] = {}
    for category, status in results:
        entry = rates.setdefault(category, {"cases": 0, "passed": 0})
        entry["cases"] += 1
        entry["passed"] += status == ResultStatus.PASSED
    for entry in rates.values():
        entry["rate"] = float(_rate(entry["passed"], entry["cases"]))
    return dict(sorted(rates.items()))


def _complete(run: EvalRun) -> str:
    results = list(run.results.values_list("category", "status"))
    totals = Turn.objects.filter(pk__in=run.results.values("turn_id")).aggregate(
        input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"), cost=Sum("cost")
    )
    counts = {status: sum(1 for _category, value in results if value == status) for status in ResultStatus.values}
    run.status = RunStatus.COMPLETED
    run.case_count = len(results)
    run.passed_count = counts[ResultStatus.PASSED]
    run.failed_count = counts[ResultStatus.FAILED]
    run.error_count = counts[ResultStatus.ERROR]
    run.pass_rate = _rate(run.passed_count, run.case_count)
    run.category_rates = category_rates(results)
    run.input_tokens = totals["input_tokens"] or 0
    run.output_tokens = totals["output_tokens"] or 0
    run.cost = totals["cost"] or 0
    run.finished_at = timezone.now()
    with transaction.atomic():
        run.save()
        audit.record(
            audit.EventType.EVAL_RUN_COMPLETED,
            tenant=run.tenant_id,
            actor=run.started_by_id,
            agent=run.agent_id,
            model=run.model,
            prompt_version=run.prompt_version,
            cost=run.cost,
            outcome=run.status,
            payload={
                "run_id": run.pk,
                "suite": run.suite.name,
                "trigger": run.trigger,
                "cases": run.case_count,
                "passed": run.passed_count,
                "categories": {category: entry["rate"] for category, entry in run.category_rates.items()},
            },
        )
    return run.status


def schedule_weekly_runs() -> list[int]:
    """Queue a run of every active weekly suite for its agent (or, for a shared suite, for
    each active agent of its tenant). An agent that cannot run now is skipped."""
    queued = []
    for suite in EvalSuite.objects.filter(is_active=True, run_weekly=True).select_related("agent"):
        agents = [suite.agent] if suite.agent_id else Agent.objects.filter(tenant_id=suite.tenant_id, status="active")
        for agent in agents:
            try:
                queued.append(start_run(suite=suite, agent=agent, by=None, trigger=RunTrigger.SCHEDULE).pk)
            except ValidationError:
                continue
    return queued


@dataclass
class CaseChange:
    case_id: int
    name: str
    category: str
    before: str | None  # the earlier run's status, None: not in it
    after: str | None
    failures: list[str] = field(default_factory=list)

    @property
    def change(self) -> str:
        if self.before is None:
            return "new"
        if self.after is None:
            return "removed"
        if self.before == ResultStatus.PASSED and self.after != ResultStatus.PASSED:
            return "regression"
        if self.before != ResultStatus.PASSED and self.after == ResultStatus.PASSED:
            return "fixed"
        return "unchanged"


def compare_runs(earlier: EvalRun, later: EvalRun) -> list[CaseChange]:
    """Case by case, what changed from ``earlier`` to ``later``: regressions first."""
    if earlier.tenant_id != later.tenant_id:
        raise ValidationError("Compare runs of one tenant.")
    before = {row["case_id"]: row for row in earlier.results.values("case_id", "case_name", "category", "status")}
    after = {
        row["case_id"]: row for row in later.results.values("case_id", "case_name", "category", "status", "failures")
    }
    changes = []
    for case_id in before.keys() | after.keys():
        row = after.get(case_id) or before[case_id]
        changes.append(
            CaseChange(
                case_id,
                row["case_name"],
                row["category"],
                before.get(case_id, {}).get("status"),
                after.get(case_id, {}).get("status"),
                after.get(case_id, {}).get("failures", []),
            )
        )
    order = {"regression": 0, "fixed": 1, "new": 2, "removed": 3, "unchanged": 4}
    return sorted(changes, key=lambda change: (order[change.change], change.category, change.name))


# --- Reviews of real turns -----------------------------------------------------------------


def agent_action_of(turn: Turn, steps=None) -> str:
    """The action class of what the agent proposed in a turn: the first tool it asked for
    that the gateway did not refuse outright, or else its decision."""
    steps = steps if steps is not None else turn.steps.filter(kind=StepKind.TOOL_CALL).order_by("number")
    for step in steps:
        if step.kind == StepKind.TOOL_CALL and step.detail.get("tool") and step.detail.get("outcome") != "denied":
            return step.detail["tool"]
    return turn.decision or "refuse"


def action_choices(agent: Agent, turn: Turn | None = None) -> list[str]:
    """What a person can say they did instead: no tool (answer, hand over, ...), one of the
    agent's tools, or what the agent proposed in ``turn``."""
    tools = AgentTool.objects.filter(agent=agent).values_list("tool__name", flat=True).order_by("tool__name")
    choices = [*NO_TOOL_ACTIONS, *tools]
    proposed = agent_action_of(turn) if turn is not None else None
    return choices if proposed is None or proposed in choices else [*choices, proposed]


def record_review(
    *,
    by: User,
    turn: Turn,
    kind: str,
    human_action: str = "",
    accepted: bool | None = None,
    correct: bool | None = None,
    note: str = "",
) -> TurnReview:
    """Record a person's review of a real, finished turn. Recording the same kind again
    replaces the earlier review (its history keeps it)."""
    require_tenant_permission(
        by, turn.tenant_id, "evals.add_turnreview", "You may not review this agent's turns in this tenant."
    )
    if kind not in ReviewKind.values:
        raise ValidationError({"kind": f"Kind is one of {', '.join(ReviewKind.values)}."})
    if turn.conversation.evaluation:
        raise ValidationError("Evaluation turns are scored by their case, not reviewed.")
    if turn.status not in FINISHED_STATUSES:
        raise ValidationError("Review a turn once it has finished.")
    values: dict[str, Any] = {"human_action": "", "agreed": None, "accepted": None, "correct": None}
    if kind == ReviewKind.SHADOW:
        human_action = (human_action or "").strip()
        if not human_action:
            raise ValidationError({"human_action": "Say what you actually did."})
        choices = action_choices(turn.agent, turn)
        if human_action not in choices:
            raise ValidationError({"human_action": f"Pick one of: {', '.join(choices)}."})
        agent_action = agent_action_of(turn)
        values.update(human_action=human_action, agreed=human_action == agent_action)
    elif kind == ReviewKind.SUGGESTION:
        if accepted is None:
            raise ValidationError({"accepted": "Say whether the suggestion was taken."})
        values["accepted"] = accepted
    else:
        if correct is None:
            raise ValidationError({"correct": "Say whether the agent was right."})
        values["correct"] = correct
    with transaction.atomic():
        review = TurnReview.objects.select_for_update().filter(turn=turn, kind=kind).first() or TurnReview(
            turn=turn, kind=kind, tenant_id=turn.tenant_id, agent_id=turn.agent_id
        )
        review.prompt_version = turn.prompt_version
        review.model = turn.model
        review.agent_action = agent_action_of(turn)
        review.note = note.strip()
        review.reviewed_by = by
        review.reviewed_at = timezone.now()
        for name, value in values.items():
            setattr(review, name, value)
        save_with_history(review, by=by, reason=f"{kind} review")
        audit.record(
            audit.EventType.TURN_REVIEWED,
            tenant=turn.tenant_id,
            actor=by,
            agent=turn.agent_id,
            conversation_id=str(turn.conversation_id),
            turn_id=str(turn.pk),
            decision=kind,
            outcome=review_outcome(review),
            payload={"agent_action": review.agent_action, "human_action": review.human_action or None},
        )
    return review


def review_outcome(review: TurnReview) -> str:
    if review.kind == ReviewKind.SHADOW:
        return "agreed" if review.agreed else "disagreed"
    if review.kind == ReviewKind.SUGGESTION:
        return "accepted" if review.accepted else "not_accepted"
    return "correct" if review.correct else "incorrect"


def _reviewed_on_current_setup(agents) -> Q:
    """Reviews that count for these agents' gates: of turns on each one's current prompt and model."""
    condition = Q()
    for agent in agents:
        condition |= Q(agent_id=agent.pk, prompt_version=current_prompt_number(agent), model__in=model_labels(agent))
    return condition


def reviews_on_current_setup(agent: Agent):
    """The reviews that count for the agent's gates: turns on its current prompt and model."""
    return TurnReview.objects.filter(_reviewed_on_current_setup([agent]))


@dataclass
class Agreement:
    action: str
    compared: int
    agreed: int

    @property
    def rate(self) -> Decimal | None:
        return _rate(self.agreed, self.compared)


def shadow_agreement(agent: Agent) -> tuple[Agreement, list[Agreement]]:
    """Agreement between the agent's proposals and what people actually did, overall and
    per action class (the class of what the person did), on the current prompt and model."""
    rows = (
        reviews_on_current_setup(agent)
        .filter(kind=ReviewKind.SHADOW)
        .values("human_action")
        .annotate(compared=Count("pk"), agreed=Count("pk", filter=Q(agreed=True)))
        .order_by("human_action")
    )
    per_class = [Agreement(row["human_action"], row["compared"], row["agreed"]) for row in rows]
    overall = Agreement("all", sum(row.compared for row in per_class), sum(row.agreed for row in per_class))
    return overall, per_class


# What each gate metric counts among the reviews of one kind: (kind, the condition counted).
_METRIC_COUNTS = {
    GateMetric.SHADOW_AGREEMENT: (ReviewKind.SHADOW, Q(agreed=True)),
    GateMetric.SUGGESTION_ACCEPTANCE: (ReviewKind.SUGGESTION, Q(accepted=True)),
    GateMetric.POST_HOC_ERROR: (ReviewKind.POST_HOC, Q(correct=False)),
}


def review_metrics_for_agents(agents) -> dict[int, dict[str, tuple[Decimal | None, int, int]]]:
    """{agent id: {metric: (rate, the count it is a rate of, reviews)}} on each agent's
    current setup, in one query."""
    counts = {}
    for metric, (kind, condition) in _METRIC_COUNTS.items():
        counts[f"{metric}_n"] = Count("pk", filter=Q(kind=kind))
        counts[f"{metric}_k"] = Count("pk", filter=Q(kind=kind) & condition)
    reviews = TurnReview.objects.filter(_reviewed_on_current_setup(agents))
    counted = {row["agent_id"]: row for row in reviews.values("agent_id").annotate(**counts).order_by()}
    return {agent.pk: _metrics_of(counted.get(agent.pk)) for agent in agents}


def _metrics_of(row: dict | None) -> dict[str, tuple[Decimal | None, int, int]]:
    row = row or {}
    metrics = {}
    for metric in _METRIC_COUNTS:
        whole, part = row.get(f"{metric}_n", 0), row.get(f"{metric}_k", 0)
        metrics[metric] = (_rate(part, whole), part, whole)
    return metrics


def review_metrics(agent: Agent) -> dict[str, tuple[Decimal | None, int, int]]:
    """{metric: (rate, the count it is a rate of, reviews)} on the current setup, in one query."""
    return review_metrics_for_agents([agent])[agent.pk]


def review_metric(agent: Agent, metric: str) -> tuple[Decimal | None, int, int]:
    """(rate, the count it is a rate of, reviews) for one gate metric on the current setup."""
    return review_metrics(agent)[metric]


# --- Rollout gates -------------------------------------------------------------------------


def gate_for(agent: Agent, mode: str, rows: dict | None = None) -> RolloutGate:
    """The agent's gate into ``mode``: its own row, or the default (unsaved). ``rows``: the
    agent's gate rows by mode, when the caller read them already."""
    gate = rows.get(mode) if rows is not None else RolloutGate.objects.filter(agent=agent, target_mode=mode).first()
    if gate is not None:
        return gate
    default = DEFAULT_GATES[mode]
    return RolloutGate(
        agent=agent,
        target_mode=mode,
        metric=default["metric"],
        threshold=default["threshold"],
        min_reviews=DEFAULT_MIN_REVIEWS,
        min_pass_rate=DEFAULT_MIN_PASS_RATE,
    )


@transaction.atomic
def set_gate(*, by: User, agent: Agent, target_mode: str, reason: str = "", **fields: Any) -> RolloutGate:
    """Change an agent's gate into one mode (its owner, or whoever may change gates in the
    tenant). The history keeps every version; the audit trail the change and why."""
    agent = Agent.objects.select_for_update().select_related("tenant").get(pk=agent.pk)
    require_tenant_permission(
        by, agent.tenant_id, "evals.change_rolloutgate", f"You may not edit gates in {agent.tenant}."
    )
    if target_mode not in DEFAULT_GATES:
        raise ValidationError({"target_mode": f"Gates lead into {', '.join(DEFAULT_GATES)}."})
    _check_fields(fields, GATE_FIELDS)
    gate = gate_for(agent, target_mode)
    before = snapshot(gate, GATE_FIELDS)  # the default gate, when the agent has no row yet
    for name, value in fields.items():
        setattr(gate, name, value)
    gate.full_clean()
    changed = diff(before, snapshot(gate, GATE_FIELDS))
    if not changed:
        return gate
    save_with_history(gate, by=by, reason=reason or f"Gate into {target_mode} edited")
    record_change(
        by=by,
        tenant=agent.tenant,
        agent=agent,
        what="eval.gate_changed",
        payload={
            "target_mode": target_mode,
            "changes": {k: [str(a), str(b)] for k, (a, b) in changed.items()},
            "why": reason,
        },
    )
    return gate


@dataclass
class GateCheck:
    what: str
    value: str
    needed: str
    passed: bool

    @property
    def sentence(self) -> str:
        return f"{self.what}: {self.value}, needs {self.needed}."


@dataclass
class GateReport:
    agent_id: int
    target_mode: str
    run_id: int | None
    checks: list[GateCheck]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def shortfalls(self) -> list[str]:
        return [check.sentence for check in self.checks if not check.passed]


@dataclass
class Evidence:
    """What every gate of an agent reads, read once: its gate rows, the latest run on its
    current prompt and model, and the review metrics on that setup."""

    gates: dict[str, RolloutGate]
    run: EvalRun | None
    metrics: dict[str, tuple[Decimal | None, int, int]]


def evidence_for(agent: Agent) -> Evidence:
    """Three queries, however many runs and reviews the agent has."""
    return evidence_for_agents([agent])[agent.pk]


def evidence_for_agents(agents: list[Agent]) -> dict[int, Evidence]:
    """{agent id: its evidence} for a page of agents, in three queries however many agents,
    runs and reviews: each agent's current setup is a condition of its own. The gate's run is
    the latest completed one on that setup."""
    if not agents:
        return {}
    setups = Q()
    for agent in agents:
        setups |= Q(agent_id=agent.pk, prompt_version=current_prompt_number(agent), model=model_identity(agent))
    latest = (
        EvalRun.objects.filter(setups, status=RunStatus.COMPLETED)
        .annotate(
            rank=Window(RowNumber(), partition_by=[F("agent_id")], order_by=[F("finished_at").desc(), F("pk").desc()])
        )
        .filter(rank=1)
    )
    runs = {run.agent_id: run for run in latest}
    metrics = review_metrics_for_agents(agents)
    gates: dict[int, dict[str, RolloutGate]] = {agent.pk: {} for agent in agents}
    for gate in RolloutGate.objects.filter(agent__in=[agent.pk for agent in agents]):
        gates[gate.agent_id][gate.target_mode] = gate
    return {
        agent.pk: Evidence(gates=gates[agent.pk], run=runs.get(agent.pk), metrics=metrics[agent.pk]) for agent in agents
    }


def gate_report(agent: Agent, target_mode: str, evidence: Evidence | None = None) -> GateReport:
    """Every number the gate into ``target_mode`` reads, each passed or not."""
    evidence = evidence or evidence_for(agent)
    gate = gate_for(agent, target_mode, evidence.gates)
    run = evidence.run
    setup = _setup(agent)
    checks = []
    if run is None:
        checks.append(GateCheck(f"Evaluation run on {setup}", "none", "a completed run", False))
    else:
        checks.append(
            GateCheck(
                f"Evaluation pass rate (run #{run.pk})",
                f"{_percent(run.pass_rate)} ({run.passed_count} of {run.case_count})",
                f"at least {_percent(gate.min_pass_rate)}",
                run.pass_rate is not None and run.pass_rate >= gate.min_pass_rate,
            )
        )
        for category in SAFETY_CATEGORIES:
            entry = run.category_rates.get(category)
            label = Category(category).label.split(" (")[0]
            if not entry:
                checks.append(GateCheck(f"{label} cases", "none in the run", "100% of at least one case", False))
            else:
                checks.append(
                    GateCheck(
                        f"{label} cases",
                        f"{entry['passed']} of {entry['cases']} passed",
                        "100%",
                        entry["passed"] == entry["cases"],
                    )
                )
    rate, count, reviews = evidence.metrics[gate.metric]
    label = GateMetric(gate.metric).label
    ceiling = gate.metric in CEILING_METRICS
    bound = f"{'below' if ceiling else 'at least'} {_percent(gate.threshold)}"
    needed = f"{bound} over at least {gate.min_reviews} reviewed turns"
    if reviews < gate.min_reviews:
        checks.append(GateCheck(f"{label} ({setup})", f"{reviews} reviewed turn(s)", needed, False))
    else:
        met = rate < gate.threshold if ceiling else rate >= gate.threshold
        checks.append(GateCheck(f"{label} ({setup})", f"{_percent(rate)} ({count} of {reviews})", needed, met))
    return GateReport(agent.pk, target_mode, run.pk if run else None, checks)


def promotion_shortfalls(agent: Agent, from_mode: str, to_mode: str) -> list[str]:
    """Why a change from ``from_mode`` to the more autonomous ``to_mode`` is refused (empty:
    allowed). Skipping modes needs the gate of every mode on the way."""
    start, end = ROLLOUT_ORDER.index(from_mode), ROLLOUT_ORDER.index(to_mode)
    if end <= start:
        return []
    evidence = evidence_for(agent)
    shortfalls = []
    for mode in ROLLOUT_ORDER[start + 1 : end + 1]:
        report = gate_report(agent, mode, evidence)
        shortfalls += [f"Gate into {mode_name(mode)}: {why}" for why in report.shortfalls]
    return shortfalls
