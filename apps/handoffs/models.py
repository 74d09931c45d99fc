from django.conf import settings
from django.db import models

from apps.accounts.models import Tenant
from apps.accounts.permissions import TenantScopedQuerySet
from apps.agents.models import Agent

from .choices import HandoffStatus, TicketPriority, TicketStatus


class Handoff(models.Model):
    """A conversation handed to a human, with what they need to continue it."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="handoffs")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    conversation_id = models.CharField(max_length=64, blank=True)
    turn_id = models.CharField(max_length=64, blank=True)
    subject = models.CharField(max_length=200, blank=True, help_text="The customer the conversation is about.")
    channel = models.CharField(max_length=16, blank=True)
    reason_code = models.CharField(max_length=64)
    reason = models.TextField(help_text="Why a human is needed, in a sentence.")
    summary = models.TextField(blank=True)
    urgency = models.CharField(max_length=8, choices=TicketPriority.choices, default=TicketPriority.NORMAL)
    status = models.CharField(max_length=10, choices=HandoffStatus.choices, default=HandoffStatus.OPEN)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.reason_code}: {self.reason[:60]}"


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
