"""Handoffs (a conversation handed to a person, with everything they need to continue it),
the human queues that work them, and internal tickets.

A handoff's package is assembled by the runtime, which owns conversations and traces, and
stored here by value: what the customer said, who they are, what was tried, why a person
is needed. The queue, priority and deadline are decided here (``services``).
"""

import re
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords

from apps.accounts.models import Role, Tenant
from apps.accounts.permissions import TenantScopedQuerySet
from apps.agents.models import Agent

from .choices import (
    SLA_FACTORS,
    UNQUEUED_SLA_MINUTES,
    WAITING_STATUSES,
    HandoffStatus,
    SlaState,
    TicketPriority,
    TicketStatus,
)

REASON_CODE = re.compile(r"[a-z][a-z0-9_]{1,63}")
MAX_SLA_MINUTES = 7 * 24 * 60


def _list_of_names(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item.strip() for item in value)


class HandoffQueue(models.Model):
    """A human queue: who works it, how fast, and which handoffs it takes.

    Routing (``services.recommend_queue``) picks the queue naming the handoff's escalation
    topic, then one naming its reason code, then the tenant's default queue.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="handoff_queues")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    sla_minutes = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_SLA_MINUTES)],
        help_text="Minutes a normal-priority handoff may wait for an answer (high: half, urgent: a quarter, "
        "low: double).",
    )
    roles = models.ManyToManyField(
        Role,
        blank=True,
        related_name="handoff_queues",
        help_text="Who works it: people holding one of these roles of the tenant. Empty: anyone who may work "
        "handoffs in the tenant.",
    )
    reason_codes = models.JSONField(
        default=list,
        blank=True,
        help_text='Escalation reason codes this queue takes, e.g. ["human_request", "negative_sentiment"].',
    )
    topics = models.JSONField(
        default=list,
        blank=True,
        help_text='Escalation topics (as agents name them in their turn rules) this queue takes, e.g. ["legal"].',
    )
    is_default = models.BooleanField(
        default=False, help_text="Takes every handoff no other queue takes. One per tenant."
    )
    escalate_to = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="escalated_from",
        help_text="Where an overdue handoff moves (a queue of the same tenant). Empty: it stays, at a higher priority.",
    )
    is_active = models.BooleanField(default=True, help_text="An inactive queue takes no new handoffs.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()
    history = HistoricalRecords(m2m_fields=[roles])

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                name="handoff_queue_name_unique_in_tenant",
                violation_error_message="The tenant already has a queue of this name.",
            ),
            models.UniqueConstraint(
                fields=["tenant"],
                condition=models.Q(is_default=True),
                name="handoff_queue_one_default_per_tenant",
                violation_error_message="The tenant already has a default queue.",
            ),
            models.CheckConstraint(condition=models.Q(sla_minutes__gte=1), name="handoff_queue_sla_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        name = (self.name or "").strip()
        if self.name and not name:  # blank is the field's own error
            errors["name"] = "Name the queue, e.g. “Billing & refunds”."
        self.name = name
        if not _list_of_names(self.reason_codes):
            errors["reason_codes"] = 'Enter a list of reason codes, e.g. ["human_request", "negative_sentiment"].'
        else:
            self.reason_codes = list(dict.fromkeys(code.strip() for code in self.reason_codes))
            bad = [code for code in self.reason_codes if not REASON_CODE.fullmatch(code)]
            if bad:
                errors["reason_codes"] = (
                    f"Not a reason code: {', '.join(bad)}. Codes are lower case letters, digits and underscores, "
                    "e.g. human_request."
                )
        if not _list_of_names(self.topics):
            errors["topics"] = 'Enter a list of topic names, e.g. ["legal", "billing dispute"].'
        else:
            self.topics = list(dict.fromkeys(topic.strip() for topic in self.topics))
        if self.is_default and not self.is_active:
            errors["is_default"] = "The default queue must be active: it takes what no other queue takes."
        problem = self._escalation_problem()
        if problem:
            errors["escalate_to"] = problem
        if errors:
            raise ValidationError(errors)

    def _escalation_problem(self) -> str:
        target = self.escalate_to
        if target is None:
            return ""
        if self.pk is not None and target.pk == self.pk:
            return "A queue cannot escalate to itself."
        if target.tenant_id != self.tenant_id:
            return "Escalate to a queue of the same tenant."
        if not target.is_active:
            return f"“{target}” is inactive: escalate to an active queue."
        seen = {self.pk, target.pk}
        following = target.escalate_to
        while following is not None:  # the chain is short; stop at a loop back to this queue
            if following.pk in seen:
                return f"Escalating to “{target}” would lead back to this queue (a loop)."
            seen.add(following.pk)
            following = following.escalate_to
        return ""

    def check_roles(self, roles) -> None:
        """The roles that work this queue must be the tenant's own."""
        foreign = [role for role in roles if role.tenant_id != self.tenant_id]
        if foreign:
            names = ", ".join(str(role) for role in foreign)
            raise ValidationError({"roles": f"Pick roles of the queue's own tenant; not {names}."})

    def takes_topic(self, topic: str) -> bool:
        wanted = topic.strip().casefold()
        return bool(wanted) and any(name.casefold() == wanted for name in self.topics)

    def takes_reason(self, reason_code: str) -> bool:
        return reason_code in self.reason_codes


def sla_window(queue: HandoffQueue | None, priority: str) -> timedelta:
    """How long a handoff of this priority may wait in this queue (or in none)."""
    minutes = queue.sla_minutes if queue is not None else UNQUEUED_SLA_MINUTES
    return timedelta(minutes=max(1.0, minutes * SLA_FACTORS.get(priority, 1.0)))


class Handoff(models.Model):
    """A conversation handed to a human, with what they need to continue it."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="handoffs")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    conversation_id = models.CharField(max_length=64, blank=True)
    turn_id = models.CharField(max_length=64, blank=True)
    subject = models.CharField(max_length=200, blank=True, help_text="The customer the conversation is about.")
    channel = models.CharField(max_length=16, blank=True)
    # Why a person is needed.
    reason_code = models.CharField(max_length=64)
    reason = models.TextField(help_text="Why a human is needed, in a sentence.")
    topic = models.CharField(
        max_length=100, blank=True, help_text="The escalation topic the customer's message named, if that was why."
    )
    # The package: what the person reads before they answer.
    summary = models.TextField(blank=True)
    customer = models.JSONField(
        default=dict, blank=True, help_text="Who the customer is: id, verified, region, segment, plan, brand, channel."
    )
    account_context = models.JSONField(
        default=dict, blank=True, help_text="Earlier conversations and handoffs of this customer, last contact."
    )
    transcript = models.JSONField(
        default=list, blank=True, help_text="The conversation's recent turns: what the customer and the agent said."
    )
    sources = models.JSONField(default=list, blank=True, help_text="Knowledge sources retrieved, and whether cited.")
    tool_calls = models.JSONField(default=list, blank=True, help_text="Tool calls attempted, with their outcomes.")
    sentiment = models.JSONField(default=dict, blank=True, help_text="Label, score and the cues that moved it.")
    urgency = models.CharField(
        max_length=8,
        choices=TicketPriority.choices,
        default=TicketPriority.NORMAL,
        help_text="How urgent the agent judged it when it handed over.",
    )
    # Working it.
    queue = models.ForeignKey(HandoffQueue, on_delete=models.PROTECT, null=True, blank=True, related_name="handoffs")
    priority = models.CharField(
        max_length=8,
        choices=TicketPriority.choices,
        default=TicketPriority.NORMAL,
        help_text="The SLA priority: starts at the urgency, one step up at each escalation.",
    )
    due_at = models.DateTimeField(null=True, blank=True, help_text="When a person must have answered (the SLA).")
    due_soon_at = models.DateTimeField(
        null=True, blank=True, help_text="From when it counts as due soon (the last quarter of its SLA)."
    )
    status = models.CharField(max_length=10, choices=HandoffStatus.choices, default=HandoffStatus.OPEN)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.TextField(blank=True, help_text="What the person did for the customer.")
    returned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    returned_at = models.DateTimeField(null=True, blank=True)
    return_note = models.TextField(blank=True, help_text="Why the conversation went back to the agent.")
    escalated_at = models.DateTimeField(null=True, blank=True, help_text="When it was last escalated as overdue.")
    escalation_level = models.PositiveSmallIntegerField(default=0, help_text="How many times it was escalated.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "status", "due_at"], name="handoff_queue_order"),
            models.Index(fields=["status", "due_at"], name="handoff_overdue"),
            models.Index(fields=["tenant", "subject"], name="handoff_subject"),
            models.Index(fields=["tenant", "created_at"], name="handoff_recent"),  # the dashboard's period
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=HandoffStatus.values), name="handoff_status_known"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.reason_code}: {self.reason[:60]}"

    @property
    def waiting(self) -> bool:
        return self.status in WAITING_STATUSES

    def set_deadline(self, start: datetime) -> None:
        """Due after the queue's SLA scaled by the priority; due soon in its last quarter."""
        window = sla_window(self.queue, self.priority)
        self.due_at = start + window
        self.due_soon_at = self.due_at - window / 4

    def sla_state_at(self, now: datetime) -> str:
        if not self.waiting or self.due_at is None:
            return SlaState.DONE
        if now >= self.due_at:
            return SlaState.OVERDUE
        if self.due_soon_at is not None and now >= self.due_soon_at:
            return SlaState.DUE_SOON
        return SlaState.ON_TIME

    @property
    def sla_state(self) -> str:
        return self.sla_state_at(timezone.now())

    @property
    def sla_label(self) -> str:
        return SlaState(self.sla_state).label


class InternalTicket(models.Model):
    """A task for a team inside the company (not a conversation handed over)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="internal_tickets")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    priority = models.CharField(max_length=8, choices=TicketPriority.choices, default=TicketPriority.NORMAL)
    status = models.CharField(max_length=8, choices=TicketStatus.choices, default=TicketStatus.OPEN)
    subject = models.CharField(max_length=200, blank=True)
    conversation_id = models.CharField(max_length=64, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title
