import re
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from simple_history.models import HistoricalRecords

from apps.accounts.models import Membership, Role, Tenant
from apps.accounts.permissions import TenantScopedQuerySet
from apps.agents.choices import Channel
from apps.agents.models import Agent

from .choices import AuthKind, ConnectionStatus, ConnectorKind, Effect, HttpMethod, Outcome, RiskTier

TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PATH_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")


def empty_schema() -> dict:
    return {"type": "object", "properties": {}, "additionalProperties": False}


class Connection(models.Model):
    """A system agents can reach, and how the control plane authenticates to it.

    The secret is either the name of an environment variable or a value encrypted with the
    deployment's key (``apps.tools.secrets``). Only a connector, at call time, turns it into
    the real credential; the model, prompts, traces, the audit trail, the admin and the API
    never see it. Revoking blocks every tool that uses the connection from the next call on.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="connections")
    name = models.SlugField(max_length=64, help_text="Unique within the tenant, e.g. 'sandbox-orders'.")
    system = models.CharField(max_length=200, help_text="The system it reaches, as people call it, e.g. 'Shopify'.")
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="owned_connections",
        help_text="Who answers for this credential (rotation, revocation). Required.",
    )
    auth_kind = models.CharField(max_length=16, choices=AuthKind.choices, default=AuthKind.BEARER)
    auth_header = models.CharField(
        max_length=64, blank=True, default="X-API-Key", help_text="For API keys sent in a header: the header's name."
    )
    base_url = models.URLField(max_length=500, help_text="e.g. https://shop.example.com/api")
    secret_env_var = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the secret (never the secret itself).",
    )
    secret_ciphertext = models.TextField(blank=True, editable=False)
    status = models.CharField(max_length=8, choices=ConnectionStatus.choices, default=ConnectionStatus.ACTIVE)
    status_reason = models.TextField(blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    status_changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    # The ciphertext stays out of history: old secrets must not outlive a rotation.
    history = HistoricalRecords(excluded_fields=["secret_ciphertext"])
    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__name", "name"]
        permissions = [("revoke_connection", "Can revoke a connection")]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="connection_name_unique_in_tenant"),
            models.CheckConstraint(
                condition=models.Q(status__in=ConnectionStatus.values), name="connection_status_known"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.system} ({self.name})"

    @property
    def is_active(self) -> bool:
        return self.status == ConnectionStatus.ACTIVE

    @property
    def has_secret(self) -> bool:
        return bool(self.secret_env_var or self.secret_ciphertext)

    @property
    def secret_label(self) -> str:
        """Where the secret lives, for people: never the secret."""
        if self.secret_env_var:
            return f"environment variable {self.secret_env_var}"
        if self.secret_ciphertext:
            return "encrypted value (stored)"
        return "none"

    def clean(self) -> None:
        errors = {}
        if self.secret_env_var and not ENV_VAR_NAME.match(self.secret_env_var):
            errors["secret_env_var"] = "Name an environment variable (letters, digits, underscores)."  # noqa: S105
        if self.auth_kind == AuthKind.API_KEY_HEADER and not HEADER_NAME.match(self.auth_header or ""):
            errors["auth_header"] = "Name the header the API key goes in, e.g. X-API-Key."
        if (
            self.owner_id
            and self.tenant_id
            and not Membership.objects.filter(user_id=self.owner_id, role__tenant_id=self.tenant_id).exists()
        ):
            errors["owner"] = "The owner must hold a role in this connection's tenant."
        if errors:
            raise ValidationError(errors)


class ToolQuerySet(TenantScopedQuerySet):
    def with_list_relations(self):
        return self.select_related("tenant", "connection")


class Tool(models.Model):
    """Something an agent can do in a business system, and how dangerous it is."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="tools")
    name = models.CharField(max_length=100, help_text="Dotted, e.g. crm.read, ticket.create, refund.issue.")
    description = models.TextField(help_text="What it does, for the model and for the people who grant it.")
    argument_schema = models.JSONField(
        default=empty_schema, help_text="JSON Schema (an object) the arguments must satisfy."
    )
    risk_tier = models.CharField(max_length=8, choices=RiskTier.choices, default=RiskTier.LOW)
    writes = models.BooleanField(
        default=False, help_text="Changes something in a system. Tools that only read leave no side effect."
    )
    reversible = models.BooleanField(default=True, help_text="Its effect can be undone (a note, not a refund).")
    external_facing = models.BooleanField(default=False, help_text="Reaches people outside the company.")
    connector = models.CharField(max_length=8, choices=ConnectorKind.choices, default=ConnectorKind.BUILTIN)
    builtin = models.CharField(
        max_length=64, blank=True, help_text="For built-in tools: which one (see apps/tools/connectors.py)."
    )
    connection = models.ForeignKey(Connection, on_delete=models.PROTECT, null=True, blank=True, related_name="tools")
    http_method = models.CharField(max_length=8, choices=HttpMethod.choices, default=HttpMethod.GET, blank=True)
    path_template = models.CharField(
        max_length=300,
        blank=True,
        help_text="For HTTP tools: the path under the connection's base URL, e.g. /orders/{order_id}. "
        "Arguments named in braces fill the path; the rest go in the JSON body (or the query for GET).",
    )
    timeout_seconds = models.FloatField(default=10.0)
    amount_field = models.CharField(
        max_length=64, blank=True, help_text="The argument holding a money amount, for grant limits and thresholds."
    )
    approval_sla_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Minutes a request to use this tool may wait for a decision before it is overdue "
        "(empty: the deployment's APPROVAL_SLA_MINUTES).",
    )
    second_approver_above = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Above this amount, two different people must approve (empty: one approval is enough). "
        "Needs an amount field.",
    )
    per_user_per_minute = models.PositiveIntegerField(
        default=0, help_text="Calls one person's agents may make per minute (0: no limit)."
    )
    per_minute = models.PositiveIntegerField(
        default=0, help_text="Calls all agents together may make per minute, to protect the system (0: no limit)."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()
    objects = ToolQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="tool_name_unique_in_tenant"),
            models.CheckConstraint(condition=models.Q(risk_tier__in=RiskTier.values), name="tool_risk_tier_known"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if not TOOL_NAME.match(self.name or ""):
            errors["name"] = "Use a dotted lower-case name such as crm.read or refund.issue."
        schema_error = schema_problem(self.argument_schema)
        if schema_error:
            errors["argument_schema"] = schema_error
        if self.timeout_seconds is not None and not 0 < self.timeout_seconds <= 120:
            errors["timeout_seconds"] = "Enter a timeout between 0 and 120 seconds."
        if self.connector == ConnectorKind.BUILTIN:
            from .connectors import builtin_names

            if self.builtin not in builtin_names():
                errors["builtin"] = f"Pick one of the built-in tools: {', '.join(builtin_names())}."
        elif self.connector == ConnectorKind.HTTP:
            if not self.connection_id:
                errors["connection"] = "An HTTP tool needs the connection it calls."
            elif self.tenant_id and self.connection.tenant_id != self.tenant_id:
                errors["connection"] = "Pick a connection of this tool's tenant."
            if not self.path_template.startswith("/"):
                errors["path_template"] = "Enter a path starting with /, e.g. /orders/{order_id}."
            elif not schema_error:
                required = set(self.argument_schema.get("required", []))
                missing = [name for name in PATH_FIELD.findall(self.path_template) if name not in required]
                if missing:
                    errors["path_template"] = (
                        f"The path names arguments the schema does not require: {', '.join(missing)}."
                    )
        properties = {} if schema_error else self.argument_schema.get("properties", {})
        if self.amount_field and not schema_error and self.amount_field not in properties:
            errors["amount_field"] = "The amount field must be one of the schema's properties."
        if self.second_approver_above is not None:
            if self.second_approver_above < 0:
                errors["second_approver_above"] = "Enter an amount of zero or more."
            elif not self.amount_field:
                errors["second_approver_above"] = "Name the amount field first: the threshold compares that amount."
        if self.approval_sla_minutes == 0:
            errors["approval_sla_minutes"] = "Enter at least one minute, or leave it empty for the default."
        if self.risk_tier in (RiskTier.LOW,) and self.writes and not self.reversible:
            errors["risk_tier"] = "A tool that writes and cannot be undone is at least medium risk."
        if errors:
            raise ValidationError(errors)

    def amount_in(self, arguments: dict):
        """The money amount ``arguments`` name, or None."""
        if not self.amount_field:
            return None
        return arguments.get(self.amount_field)


def schema_problem(schema) -> str:
    """Why ``schema`` cannot be a tool's argument schema, or ''."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return 'Enter a JSON Schema object, e.g. {"type": "object", "properties": {...}, "required": [...]}.'
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        return f"Not a valid JSON Schema: {error.message}"
    if not isinstance(schema.get("properties", {}), dict):
        return "The schema's properties must be an object."
    return ""


class AgentToolQuerySet(TenantScopedQuerySet):
    tenant_field = "agent__tenant"


class AgentTool(models.Model):
    """One tool on an agent's allowlist. A call needs both this and a grant to the acting
    user's role: the allowlist says what the agent is for, the grant what the person may do."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="tool_allowances")
    tool = models.ForeignKey(Tool, on_delete=models.CASCADE, related_name="agent_allowances")
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    added_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()
    objects = AgentToolQuerySet.as_manager()

    class Meta:
        verbose_name = "agent tool allowance"
        ordering = ["agent", "tool__name"]
        constraints = [models.UniqueConstraint(fields=["agent", "tool"], name="agent_tool_unique")]

    def __str__(self) -> str:
        return f"{self.agent} may use {self.tool}"

    def clean(self) -> None:
        if self.agent_id and self.tool_id and self.agent.tenant_id != self.tool.tenant_id:
            raise ValidationError({"tool": "Pick a tool of the agent's tenant."})


class GrantQuerySet(TenantScopedQuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)


class Grant(models.Model):
    """A role's permission to have agents use a tool on its holders' behalf, with conditions.

    Among the grants of the acting user's roles whose conditions hold, the most restrictive
    effect wins; if none holds, the call is denied. Grants are revoked, not deleted.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="tool_grants")
    role = models.ForeignKey(Role, on_delete=models.PROTECT, related_name="tool_grants")
    tool = models.ForeignKey(Tool, on_delete=models.PROTECT, related_name="grants")
    effect = models.CharField(max_length=16, choices=Effect.choices, default=Effect.ALLOW)
    max_amount = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text="Calls above this amount are not granted."
    )
    requires_verified_subject = models.BooleanField(
        default=False, help_text="Only when the customer's identity was verified in this conversation."
    )
    allowed_channels = models.JSONField(default=list, blank=True, help_text="Empty means every channel.")
    daily_limit_per_user = models.PositiveIntegerField(
        null=True, blank=True, help_text="Calls per person per day this grant covers (empty: no limit)."
    )
    may_approve = models.BooleanField(
        default=False,
        help_text="Holders of this role may approve other people's requests to use this tool "
        "(never a request made on their own behalf).",
    )
    note = models.TextField(blank=True, help_text="Why this role needs this tool.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    revoke_reason = models.TextField(blank=True, editable=False)
    last_used_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Last call this grant authorised (to within minutes)."
    )

    # last_used_at moves with use, not with governance: it stays out of history.
    history = HistoricalRecords(excluded_fields=["last_used_at"])
    objects = GrantQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__name", "role__name", "tool__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["role", "tool"],
                condition=models.Q(revoked_at__isnull=True),
                name="grant_one_active_per_role_and_tool",
            ),
            models.CheckConstraint(condition=models.Q(effect__in=Effect.values), name="grant_effect_known"),
        ]

    def __str__(self) -> str:
        return f"{self.role.name} → {self.tool.name}: {self.get_effect_display()}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.tenant_id:
            if self.role_id and self.role.tenant_id != self.tenant_id:
                errors["role"] = "Pick a role of this grant's tenant."
            if self.tool_id and self.tool.tenant_id != self.tenant_id:
                errors["tool"] = "Pick a tool of this grant's tenant."
        if not isinstance(self.allowed_channels, list) or not all(
            channel in Channel.values for channel in self.allowed_channels
        ):
            errors["allowed_channels"] = f"Enter a list of channels from: {', '.join(Channel.values)}."
        if self.max_amount is not None:
            if self.max_amount < 0:
                errors["max_amount"] = "Enter an amount of zero or more."
            elif self.tool_id and not self.tool.amount_field:
                errors["max_amount"] = "This tool names no amount field, so an amount limit cannot apply."
        if self.effect == Effect.DENY and (
            self.max_amount is not None
            or self.requires_verified_subject
            or self.allowed_channels
            or self.daily_limit_per_user
        ):
            errors["effect"] = "A deny grant takes no conditions: it always applies."
        if errors:
            raise ValidationError(errors)


class ToolCall(models.Model):
    """One call through the gateway: what was asked, what was decided and why, and what
    happened. Its idempotency key is unique in the tenant, so a redelivered call finds the
    first one instead of running the action again."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    idempotency_key = models.CharField(max_length=200)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    tool = models.ForeignKey(Tool, on_delete=models.PROTECT, null=True, blank=True, related_name="calls")
    tool_name = models.CharField(max_length=100)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    conversation_id = models.CharField(max_length=64, blank=True)
    turn_id = models.CharField(max_length=64, blank=True)
    channel = models.CharField(max_length=16, blank=True)
    subject = models.CharField(max_length=200, blank=True)
    subject_verified = models.BooleanField(default=False)
    scope = models.JSONField(default=dict, blank=True, help_text="The subject's audience, region, segment, ...")
    rollout_mode = models.CharField(max_length=16, blank=True)
    arguments = models.JSONField(default=dict, help_text="Redacted of secrets and PII.")
    pending_arguments = models.JSONField(
        null=True, blank=True, editable=False, help_text="Kept only while waiting for approval, to execute then."
    )
    action_digest = models.CharField(max_length=64, help_text="SHA-256 of tool, arguments, tenant and subject.")
    effect = models.CharField(max_length=16, blank=True, help_text="What the grants said, before rollout mode.")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    reason_code = models.CharField(max_length=64, blank=True)
    reason = models.TextField(blank=True)
    grant_ids = models.JSONField(default=list, blank=True)
    approval_request_id = models.BigIntegerField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True, help_text="Redacted of secrets and PII.")
    error = models.TextField(blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="toolcall_tenant_recent"),
            models.Index(fields=["tool", "outcome", "-created_at"], name="toolcall_tool_outcome_recent"),
            models.Index(fields=["agent", "tool_name", "-created_at"], name="toolcall_agent_tool_recent"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], name="toolcall_key_unique_in_tenant"),
            models.CheckConstraint(condition=models.Q(outcome__in=Outcome.values), name="toolcall_outcome_known"),
        ]

    def __str__(self) -> str:
        return f"{self.tool_name}: {self.get_outcome_display()}"
