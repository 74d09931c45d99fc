from django.conf import settings
from django.db import models

from apps.accounts.models import Tenant
from apps.accounts.permissions import TenantScopedQuerySet
from apps.agents.models import Agent

from .choices import ApprovalStatus


class ApprovalRequest(models.Model):
    """A tool call waiting for a human. It is bound to the exact action: ``action_digest``
    (tool, arguments, tenant, subject) is checked again at execution, and an approval runs
    its action once at most.

    The tool gateway opens requests; approvals sits below tools in the stack, so the call is
    referred to by value (``tool_call_id``), and execution after approval goes back through
    the gateway by task name.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="approval_requests")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    tool_call_id = models.UUIDField(unique=True)
    tool_name = models.CharField(max_length=100)
    risk_tier = models.CharField(max_length=8)
    amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    arguments = models.JSONField(default=dict, help_text="Redacted of secrets and PII.")
    action_digest = models.CharField(max_length=64)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The person the agent acted for: never an approver of this request.",
    )
    subject = models.CharField(max_length=200, blank=True)
    subject_verified = models.BooleanField(default=False)
    channel = models.CharField(max_length=16, blank=True)
    conversation_id = models.CharField(max_length=64, blank=True)
    turn_id = models.CharField(max_length=64, blank=True)
    rule = models.CharField(max_length=64, help_text="The policy rule that required approval.")
    rule_text = models.TextField(help_text="That rule, in words.")
    context = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the approver reads, as it was when the agent asked: the conversation so far, "
        "the agent's stated reason and the sources it used.",
    )
    approvals_required = models.PositiveSmallIntegerField(
        default=1, help_text="Different people who must approve: two above the tool's threshold."
    )
    status = models.CharField(max_length=10, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    due_at = models.DateTimeField(help_text="When a decision is due (the tool's SLA).")
    expires_at = models.DateTimeField(help_text="After this (SLA plus grace period) it can no longer be decided.")
    decided_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    outcome_note = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True, help_text="What the executed action returned (redacted).")

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["due_at"]
        indexes = [
            models.Index(fields=["tenant", "status", "due_at"], name="approval_queue"),
            models.Index(fields=["status", "expires_at"], name="approval_expiry"),
            models.Index(fields=["tenant", "subject", "-created_at"], name="approval_subject_recent"),
            models.Index(fields=["tenant", "tool_name", "-created_at"], name="approval_tool_recent"),
            models.Index(fields=["tenant", "decided_at"], name="approval_decided"),  # the dashboard's period
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=ApprovalStatus.values), name="approval_status_known"),
        ]

    def __str__(self) -> str:
        return f"{self.tool_name} for {self.requested_by} ({self.get_status_display()})"

    @property
    def is_pending(self) -> bool:
        return self.status == ApprovalStatus.PENDING


class ApprovalDecision(models.Model):
    """One person's approval or rejection of a request. A request needs
    ``approvals_required`` approvals from different people; one rejection closes it."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.PROTECT, related_name="decisions")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    approve = models.BooleanField()
    comment = models.TextField(blank=True)
    approver_roles = models.JSONField(default=list, help_text="The approver's roles in the tenant when deciding.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["request", "approver"], name="approval_decision_once_per_person"),
        ]

    def __str__(self) -> str:
        return f"{self.approver} {'approved' if self.approve else 'rejected'} {self.request_id}"
