"""Guardrail policies (versioned YAML documents, one active per scope), kill verdicts and
the lockouts they lead to."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords

from apps.accounts.models import Tenant
from apps.accounts.permissions import TenantScopedQuerySet
from apps.agents.models import Agent


def scope_key(tenant_id: int | None, agent_id: int | None) -> str:
    if agent_id is not None:
        return f"agent:{agent_id}"
    if tenant_id is not None:
        return f"tenant:{tenant_id}"
    return "global"


class GuardrailPolicy(models.Model):
    """One version of a policy document for a scope: global (no tenant), one tenant, or one
    agent. The document never changes once saved — an edit is a new version — and exactly
    one version per scope may be active; activating another is how a change (or a rollback)
    takes effect."""

    scope = models.CharField(max_length=40, editable=False, db_index=True)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="Empty: every tenant."
    )
    agent = models.ForeignKey(
        Agent, on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="Only this agent."
    )
    version = models.PositiveIntegerField(editable=False)
    document = models.TextField(help_text="YAML. A tenant or agent policy may hold only the keys it changes.")
    change_note = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    is_active = models.BooleanField(default=False, editable=False)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+", editable=False
    )
    activated_at = models.DateTimeField(null=True, blank=True, editable=False)

    history = HistoricalRecords()
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        verbose_name = "guardrail policy"
        verbose_name_plural = "guardrail policies"
        ordering = ["scope", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["scope", "version"], name="guardrail_policy_version_unique_per_scope"),
            models.UniqueConstraint(
                fields=["scope"], condition=models.Q(is_active=True), name="guardrail_policy_one_active_per_scope"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scope_label} v{self.version}{' (active)' if self.is_active else ''}"

    def save(self, *args, **kwargs) -> None:
        if self.agent_id and not self.tenant_id:
            self.tenant_id = self.agent.tenant_id
        self.scope = scope_key(self.tenant_id, self.agent_id)
        if self.pk is not None:
            stored = type(self).objects.filter(pk=self.pk).values("document", "scope").first()
            if stored and (stored["document"] != self.document or stored["scope"] != self.scope):
                raise ValidationError("A saved policy version never changes: save the edit as a new version.")
        super().save(*args, **kwargs)

    def clean(self) -> None:
        if self.agent_id and self.tenant_id and self.agent.tenant_id != self.tenant_id:
            raise ValidationError({"agent": "Pick an agent of the policy's tenant."})

    @property
    def scope_label(self) -> str:
        if self.agent_id:
            return f"Agent {self.agent}"
        if self.tenant_id:
            return f"Tenant {self.tenant}"
        return "Global"


class KillVerdict(models.Model):
    """A kill verdict on input, counted for the lockout rule. Holds which rule fired, never
    the text that fired it."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    subject = models.CharField(max_length=100, blank=True, help_text="The customer the turn was for, if any.")
    rule = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "user", "created_at"], name="kill_verdict_user"),
            models.Index(fields=["tenant", "subject", "created_at"], name="kill_verdict_subject"),
        ]

    def __str__(self) -> str:
        return f"kill by {self.rule} at {self.created_at:%Y-%m-%d %H:%M}"


class LockoutQuerySet(TenantScopedQuerySet):
    def in_force(self, now=None):
        now = now or timezone.now()
        return self.filter(lifted_at__isnull=True, expires_at__gt=now)


class Lockout(models.Model):
    """A user or a customer subject locked out of a tenant's agents until ``expires_at``,
    after too many kill verdicts (or by hand); security can lift it early."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    subject = models.CharField(max_length=100, blank=True)
    reason = models.CharField(max_length=300)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    lift_reason = models.CharField(max_length=300, blank=True)

    history = HistoricalRecords()
    objects = LockoutQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "expires_at"], name="lockout_tenant_expiry")]

    def __str__(self) -> str:
        who = self.user or self.subject or "unknown"
        return f"{who} locked out of {self.tenant} until {self.expires_at:%Y-%m-%d %H:%M}"

    @property
    def in_force(self) -> bool:
        return self.lifted_at is None and self.expires_at > timezone.now()
