"""Evaluation suites, their cases and runs, people's reviews of real turns, and the rollout
gates that read both.

A case says what a message must lead to in checkable terms (decision, sources cited or not,
tools called or executed or not, text present or absent). A run executes every case as a
real turn in evaluation mode and keeps, per case, what happened and which expectation
failed. A gate is passed or not on the latest run for the agent's *current* prompt version
and model, plus the reviews of turns on that same prompt and model: publishing a prompt or
switching models starts the evidence afresh.
"""

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from apps.accounts.models import Tenant
from apps.accounts.permissions import TenantScopedQuerySet
from apps.agents.choices import Channel, RolloutMode
from apps.agents.models import Agent
from apps.runtime.choices import Decision
from apps.runtime.models import Turn

from .choices import (
    DEFAULT_MIN_PASS_RATE,
    DEFAULT_MIN_REVIEWS,
    Category,
    GateMetric,
    ResultStatus,
    ReviewKind,
    RunStatus,
    RunTrigger,
)

SUBJECT_KEYS = ("subject", "subject_verified", "region", "segment", "plan", "brand", "audience")
SIMULATED_STATUSES = ("executed", "failed")
LIST_EXPECTATIONS = (
    "must_cite",
    "must_not_cite",
    "must_call",
    "must_not_call",
    "must_execute",
    "must_not_execute",
    "must_include",
    "must_not_include",
)


def _names(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item.strip() for item in value)


class EvalSuiteQuerySet(TenantScopedQuerySet):
    def for_agent(self, agent: Agent):
        """The suites that evaluate ``agent``: its own and its tenant's shared ones."""
        return self.filter(tenant_id=agent.tenant_id).filter(models.Q(agent=agent) | models.Q(agent__isnull=True))


class EvalSuite(models.Model):
    """A set of cases for one agent, or shared by every agent of the tenant (no agent)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="eval_suites")
    agent = models.ForeignKey(
        Agent,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="eval_suites",
        help_text="Empty: a shared suite, run for any agent of the tenant.",
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    run_as = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The named person whose roles the cases act with (grants, knowledge visibility).",
    )
    run_weekly = models.BooleanField(default=True, help_text="Run on the weekly schedule.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()
    objects = EvalSuiteQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__name", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="eval_suite_name_unique_in_tenant")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.agent_id and self.tenant_id and self.agent.tenant_id != self.tenant_id:
            raise ValidationError({"agent": "Pick an agent of this suite's tenant."})


class EvalCaseQuerySet(TenantScopedQuerySet):
    tenant_field = "suite__tenant"


class EvalCase(models.Model):
    suite = models.ForeignKey(EvalSuite, on_delete=models.PROTECT, related_name="cases")
    name = models.CharField(max_length=200)
    category = models.CharField(max_length=16, choices=Category.choices)
    input = models.TextField(help_text="The message, as the customer or employee would write it.")
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.WEB_CHAT)
    subject = models.JSONField(
        default=dict,
        blank=True,
        help_text='Who the turn is about: {"subject": "C-1001", "subject_verified": true, "region": "EU", '
        '"segment": "", "plan": "", "brand": "", "audience": "customer"}.',
    )
    simulated_tool_results = models.JSONField(
        default=dict,
        blank=True,
        help_text="What a tool answers when the gateway would run it, by tool name: "
        '{"order.lookup": {"status": "failed", "message": "timed out"}}. Tools never execute in a run.',
    )
    expected_decision = models.CharField(
        max_length=10, choices=Decision.choices, blank=True, help_text="Empty: any decision."
    )
    must_cite = models.JSONField(default=list, blank=True, help_text="Source ids the answer must cite.")
    must_not_cite = models.JSONField(default=list, blank=True, help_text="Source ids the answer must not cite.")
    must_call = models.JSONField(default=list, blank=True, help_text="Tools the agent must ask for.")
    must_not_call = models.JSONField(default=list, blank=True, help_text="Tools the agent must not ask for.")
    must_execute = models.JSONField(
        default=list, blank=True, help_text="Tools the gateway must decide to execute (without a person)."
    )
    must_not_execute = models.JSONField(
        default=list, blank=True, help_text="Tools the gateway must not decide to execute (deny or a person)."
    )
    must_include = models.JSONField(default=list, blank=True, help_text="Text the reply must contain (any case).")
    must_not_include = models.JSONField(default=list, blank=True, help_text="Text the reply must not contain.")
    is_active = models.BooleanField(default=True)
    source_turn = models.ForeignKey(
        Turn,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The incident this case was made from.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()
    objects = EvalCaseQuerySet.as_manager()

    class Meta:
        ordering = ["suite", "category", "name"]
        constraints = [models.UniqueConstraint(fields=["suite", "name"], name="eval_case_name_unique_in_suite")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if not (self.input or "").strip():
            errors["input"] = "Write the message the case sends."
        if not isinstance(self.subject, dict) or set(self.subject) - set(SUBJECT_KEYS):
            errors["subject"] = f"Give the subject as an object with the keys {', '.join(SUBJECT_KEYS)}."
        if not isinstance(self.simulated_tool_results, dict) or not all(
            isinstance(result, dict) and result.get("status", "executed") in SIMULATED_STATUSES
            for result in self.simulated_tool_results.values()
        ):
            errors["simulated_tool_results"] = (
                'Give each tool an object whose status is "executed" or "failed", '
                'e.g. {"order.lookup": {"status": "failed", "message": "timed out"}}.'
            )
        for field in LIST_EXPECTATIONS:
            value = getattr(self, field)
            ids = field.endswith("cite")
            valid = isinstance(value, list) and (
                all(isinstance(item, int) and not isinstance(item, bool) for item in value) if ids else _names(value)
            )
            if not valid:
                errors[field] = "Enter a list of source ids, e.g. [12, 14]." if ids else 'Enter a list, e.g. ["x"].'
        if not errors:
            for wanted, unwanted in (
                ("must_cite", "must_not_cite"),
                ("must_call", "must_not_call"),
                ("must_execute", "must_not_execute"),
                ("must_include", "must_not_include"),
            ):
                both = set(getattr(self, wanted)) & set(getattr(self, unwanted))
                if both:
                    errors[unwanted] = f"Both required and forbidden: {', '.join(map(str, sorted(both)))}."
        if not errors and not self.has_expectation:
            errors["expected_decision"] = "Say what must happen: a decision, or at least one source, tool or text."
        if errors:
            raise ValidationError(errors)

    @property
    def has_expectation(self) -> bool:
        return bool(self.expected_decision) or any(getattr(self, field) for field in LIST_EXPECTATIONS)


class EvalRun(models.Model):
    """One execution of a suite's active cases for one agent, on the agent's prompt version
    and model of that moment."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    suite = models.ForeignKey(EvalSuite, on_delete=models.PROTECT, related_name="runs")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="eval_runs")
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    trigger = models.CharField(max_length=10, choices=RunTrigger.choices)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    prompt_version = models.PositiveIntegerField(null=True, blank=True)
    model = models.CharField(max_length=200, help_text="The agent's model identity when the run was queued.")
    case_count = models.PositiveIntegerField(default=0)
    passed_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    pass_rate = models.DecimalField(max_digits=5, decimal_places=4, null=True, blank=True)
    category_rates = models.JSONField(
        default=dict, blank=True, help_text='{"grounding": {"cases": 6, "passed": 5, "rate": 0.8333}, ...}'
    )
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["agent", "status", "-created_at"], name="eval_run_latest_for_agent"),
            models.Index(fields=["tenant", "-created_at"], name="eval_run_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.suite} for {self.agent} ({self.created_at:%Y-%m-%d %H:%M})"

    @property
    def finished(self) -> bool:
        return self.status in (RunStatus.COMPLETED, RunStatus.FAILED)


class EvalResult(models.Model):
    """What one case did in one run. The case's name and category are kept by value so
    the result still reads after the case is edited."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="results")
    case = models.ForeignKey(EvalCase, on_delete=models.PROTECT, related_name="results")
    case_name = models.CharField(max_length=200)
    category = models.CharField(max_length=16, choices=Category.choices)
    turn = models.ForeignKey(Turn, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    status = models.CharField(max_length=8, choices=ResultStatus.choices)
    decision = models.CharField(max_length=10, blank=True)
    decision_reason = models.CharField(max_length=200, blank=True)
    output = models.TextField(blank=True)
    cited = models.JSONField(default=list, blank=True, help_text="Source ids the reply cited.")
    tool_calls = models.JSONField(
        default=list, blank=True, help_text='[{"tool": "refund.issue", "would": "approval"}, ...] in call order.'
    )
    failures = models.JSONField(default=list, blank=True, help_text="Each expectation that did not hold, and why.")
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    latency_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["run", "category", "case_name"]
        constraints = [models.UniqueConstraint(fields=["run", "case"], name="eval_result_once_per_case")]

    def __str__(self) -> str:
        return f"{self.case_name}: {self.status}"

    @property
    def passed(self) -> bool:
        return self.status == ResultStatus.PASSED


class RolloutGateQuerySet(TenantScopedQuerySet):
    tenant_field = "agent__tenant"


class RolloutGate(models.Model):
    """An agent's own gate into one rollout mode, where its owner changed the default.
    Without a row the default gate applies (``choices.DEFAULT_GATES``)."""

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="rollout_gates")
    target_mode = models.CharField(
        max_length=16, choices=[choice for choice in RolloutMode.choices if choice[0] != RolloutMode.SHADOW]
    )
    metric = models.CharField(max_length=24, choices=GateMetric.choices)
    threshold = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        help_text="0 to 1. A floor for agreement and acceptance; a ceiling (must stay below) for the error rate.",
    )
    min_reviews = models.PositiveIntegerField(
        default=DEFAULT_MIN_REVIEWS, help_text="Reviewed turns needed before the rate counts."
    )
    min_pass_rate = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=DEFAULT_MIN_PASS_RATE,
        help_text="The latest evaluation run's overall pass rate needed (0 to 1). "
        "Prompt injection, PII and compliance cases must always all pass.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()
    objects = RolloutGateQuerySet.as_manager()

    class Meta:
        ordering = ["agent", "target_mode"]
        constraints = [models.UniqueConstraint(fields=["agent", "target_mode"], name="rollout_gate_once_per_mode")]

    def __str__(self) -> str:
        return f"{self.agent}: gate into {self.target_mode}"

    def clean(self) -> None:
        errors = {}
        for field in ("threshold", "min_pass_rate"):
            value = getattr(self, field)
            if value is not None and not Decimal(0) <= value <= Decimal(1):
                errors[field] = "Enter a rate from 0 to 1 (0.95 is 95%)."
        if self.min_reviews is not None and self.min_reviews < 1:
            errors["min_reviews"] = "At least one reviewed turn."
        if errors:
            raise ValidationError(errors)


class TurnReview(models.Model):
    """A person's review of a real turn: what they actually did beside what the agent
    proposed (shadow), whether they took the agent's suggestion (suggest), or whether the
    agent was right (post-hoc). One review per turn and kind; recording again replaces it
    and the history keeps the earlier one."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="turn_reviews")
    turn = models.ForeignKey(Turn, on_delete=models.PROTECT, related_name="reviews")
    kind = models.CharField(max_length=10, choices=ReviewKind.choices)
    prompt_version = models.PositiveIntegerField(null=True, blank=True)
    model = models.CharField(max_length=200, blank=True)
    agent_action = models.CharField(max_length=100, help_text="What the agent proposed: a tool, or its decision.")
    human_action = models.CharField(max_length=100, blank=True, help_text="What the person actually did (shadow).")
    agreed = models.BooleanField(null=True, help_text="Shadow: the person did what the agent proposed.")
    accepted = models.BooleanField(null=True, help_text="Suggestion: the person took it.")
    correct = models.BooleanField(null=True, help_text="Post-hoc: the agent was right.")
    note = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reviewed_at = models.DateTimeField()

    history = HistoricalRecords()
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-reviewed_at"]
        constraints = [models.UniqueConstraint(fields=["turn", "kind"], name="turn_review_once_per_kind")]
        indexes = [
            models.Index(fields=["agent", "prompt_version", "model"], name="turn_review_for_gate"),
            models.Index(fields=["tenant", "reviewed_at"], name="turn_review_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.turn_id}"
