"""Conversations, turns and their traces.

A Turn is one message and everything the control plane did about it; its Steps are the
ordered trace (guardrail verdict, retrieval with sources, each model call, each tool call
with the gateway's decision, the decision, the handoff). A paused turn keeps what it needs
to resume in ``state``: the messages so far and the tool calls waiting for a person.
"""

import uuid

from django.conf import settings
from django.db import models

from apps.accounts.models import Tenant
from apps.accounts.permissions import TenantScopedQuerySet
from apps.agents.models import Agent

from .choices import ConversationStatus, Decision, StepKind, TurnStatus


class Conversation(models.Model):
    """A thread between one actor and one agent about one subject.

    The actor is the authenticated person (or a channel integration's own account) and
    never changes; the subject is the customer the conversation is for, with what is
    known of them, which scopes retrieval and the tools' conditions.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="conversations")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="conversations")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="conversations")
    channel = models.CharField(max_length=16)
    audience = models.CharField(max_length=16, default="customer")
    subject = models.CharField(max_length=200, blank=True, help_text="The customer's id in the business systems.")
    subject_verified = models.BooleanField(default=False, help_text="The customer's identity was checked.")
    region = models.CharField(max_length=40, blank=True)
    segment = models.CharField(max_length=40, blank=True)
    plan = models.CharField(max_length=40, blank=True, help_text="The customer's plan or product.")
    brand = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=12, choices=ConversationStatus.choices, default=ConversationStatus.OPEN)
    evaluation = models.BooleanField(
        default=False,
        help_text="An evaluation run's conversation: tools never execute, nobody is handed it, and reports skip it.",
    )
    simulated_tool_results = models.JSONField(
        null=True,
        blank=True,
        help_text="Evaluation only: what a tool the gateway would run answers instead, by tool name.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["tenant", "-updated_at"], name="conversation_recent")]

    def __str__(self) -> str:
        return f"{self.agent} with {self.subject or self.actor} ({self.created_at:%Y-%m-%d %H:%M})"


class Turn(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.PROTECT, related_name="turns")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    number = models.PositiveIntegerField(help_text="1 for the conversation's first turn.")
    client_key = models.CharField(
        max_length=100, blank=True, help_text="The caller's idempotency key: posting it again returns this turn."
    )
    input = models.TextField()
    status = models.CharField(max_length=10, choices=TurnStatus.choices, default=TurnStatus.QUEUED)
    decision = models.CharField(max_length=10, choices=Decision.choices, blank=True)
    decision_reason = models.CharField(max_length=200, blank=True)
    output = models.TextField(blank=True)
    model = models.CharField(max_length=200, blank=True, help_text="Provider and model, or the offline model.")
    offline = models.BooleanField(default=False, help_text="Answered by the offline model, not a real one.")
    prompt_version = models.PositiveIntegerField(null=True, blank=True)
    rollout_mode = models.CharField(max_length=16, blank=True, help_text="The agent's rollout mode when the turn ran.")
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    model_ms = models.FloatField(default=0, help_text="Time spent waiting for the model.")
    latency_ms = models.FloatField(null=True, blank=True, help_text="From start of work to the final answer.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times a worker started or resumed this turn.")
    state = models.JSONField(null=True, blank=True, help_text="What a paused turn needs to resume.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Until when its worker holds it: renewed at every step, and for a model call's longest wait.",
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["conversation", "number"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "number"], name="turn_number_unique_in_conversation"),
            models.UniqueConstraint(
                fields=["conversation", "client_key"],
                condition=~models.Q(client_key=""),
                name="turn_client_key_unique_in_conversation",
            ),
            models.CheckConstraint(condition=models.Q(status__in=TurnStatus.values), name="turn_status_known"),
        ]
        indexes = [
            models.Index(fields=["status", "lease_expires_at"], name="turn_recovery"),
            models.Index(fields=["tenant", "-created_at"], name="turn_recent"),
        ]

    def __str__(self) -> str:
        return f"Turn {self.number} of {self.conversation_id}"

    @property
    def finished(self) -> bool:
        return self.status in (TurnStatus.COMPLETED, TurnStatus.FAILED, TurnStatus.REFUSED)


class Step(models.Model):
    """One entry of a turn's trace. ``detail`` never holds a secret: tool arguments and
    results are redacted by the gateway, passages are cited by source, not quoted."""

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="steps")
    number = models.PositiveIntegerField()
    kind = models.CharField(max_length=20, choices=StepKind.choices)
    summary = models.CharField(max_length=300)
    detail = models.JSONField(default=dict, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["turn", "number"]
        constraints = [models.UniqueConstraint(fields=["turn", "number"], name="step_number_unique_in_turn")]

    def __str__(self) -> str:
        return f"{self.number}. {self.get_kind_display()}: {self.summary}"
