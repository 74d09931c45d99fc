"""What security and engineering do to the tool registry: tools, connections and their
secrets, grants, agent allowlists. Each operation checks the actor's permission in the
tenant inside its transaction, labels the history row, and writes a ``config.changed``
audit event (never a secret: a secret change records only that it changed and where the
secret now lives)."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.accounts.governance import diff, record_change, require_tenant_permission, save_with_history, snapshot
from apps.accounts.models import Role, Tenant, User
from apps.agents.models import Agent

from . import secrets
from .choices import ConnectionStatus
from .models import AgentTool, Connection, Grant, Tool

TOOL_FIELDS = (
    "name",
    "description",
    "argument_schema",
    "risk_tier",
    "writes",
    "reversible",
    "external_facing",
    "connector",
    "builtin",
    "connection",
    "http_method",
    "path_template",
    "timeout_seconds",
    "amount_field",
    "approval_sla_minutes",
    "second_approver_above",
    "per_user_per_minute",
    "per_minute",
    "is_active",
)
CONNECTION_FIELDS = ("name", "system", "description", "owner", "auth_kind", "auth_header", "base_url", "secret_env_var")
GRANT_CONDITIONS = (
    "effect",
    "max_amount",
    "requires_verified_subject",
    "allowed_channels",
    "daily_limit_per_user",
    "may_approve",
)


def _required(reason: str, what: str) -> str:
    if not reason or not reason.strip():
        raise ValidationError({"reason": f"Say why {what}: the reason is kept with the record."})
    return reason.strip()


def _unknown(fields, allowed, what: str) -> None:
    unknown = set(fields) - set(allowed)
    if unknown:
        raise ValidationError(f"These {what} fields cannot be set here: {', '.join(sorted(unknown))}.")


# --- Tools ----------------------------------------------------------------------------------


@transaction.atomic
def save_tool(*, by: User, tenant: Tenant | None = None, tool: Tool | None = None, reason: str = "", **fields) -> Tool:
    """Create a tool (``tenant``) or change one (``tool``). Risk tier, reversibility and the
    connector are governance: every change lands in the audit trail with the diff."""
    _unknown(fields, TOOL_FIELDS, "tool")
    if tool is None:
        require_tenant_permission(by, tenant.pk, "tools.add_tool", f"You may not add tools in {tenant}.")
        tool, before, what = Tool(tenant=tenant), {}, "tools.tool_created"
    else:
        tool = Tool.objects.select_for_update().select_related("tenant").get(pk=tool.pk)
        message = f"You may not change tools in {tool.tenant}."
        require_tenant_permission(by, tool.tenant_id, "tools.change_tool", message)
        before, what = snapshot(tool, fields), "tools.tool_changed"
    for field, value in fields.items():
        setattr(tool, field, value)
    tool.full_clean()
    if tool.pk and not diff(before, snapshot(tool, fields)):
        return tool  # nothing changed: no history row, no audit event
    save_with_history(tool, by=by, reason=reason or ("Tool created" if not before else "Tool changed"))
    changes = diff(before, snapshot(tool, fields or TOOL_FIELDS))
    if changes:
        record_change(
            by=by,
            tenant=tool.tenant,
            what=what,
            payload={"tool": {"id": tool.pk, "name": tool.name}, "changes": changes, "why": reason or None},
        )
    return tool


# --- Connections ----------------------------------------------------------------------------


def _connection_event(connection: Connection, by: User, what: str, **details) -> None:
    record_change(
        by=by,
        tenant=connection.tenant,
        what=what,
        payload={"connection": {"id": connection.pk, "name": connection.name, "system": connection.system}, **details},
    )


@transaction.atomic
def save_connection(
    *,
    by: User,
    tenant: Tenant | None = None,
    connection: Connection | None = None,
    secret_value: str | None = None,
    clear_secret: bool = False,
    reason: str = "",
    **fields,
) -> Connection:
    """Create or change a connection. ``secret_value`` (if given) is stored encrypted and
    replaces an environment-variable reference; naming an environment variable replaces a
    stored value; ``clear_secret`` removes both (e.g. for a system without authentication).
    The audit event says where the secret lives, never what it is."""
    _unknown(fields, CONNECTION_FIELDS, "connection")
    if connection is None:
        require_tenant_permission(by, tenant.pk, "tools.add_connection", f"You may not add connections in {tenant}.")
        connection, before, what = Connection(tenant=tenant), {}, "tools.connection_created"
    else:
        connection = Connection.objects.select_for_update().select_related("tenant").get(pk=connection.pk)
        message = f"You may not change connections in {connection.tenant}."
        require_tenant_permission(by, connection.tenant_id, "tools.change_connection", message)
        before, what = snapshot(connection, fields), "tools.connection_changed"
    for field, value in fields.items():
        setattr(connection, field, value)
    secret_changed = False
    if clear_secret:
        secret_changed = connection.has_secret
        connection.secret_ciphertext = connection.secret_env_var = ""
    elif secret_value:
        connection.secret_ciphertext = secrets.encrypt(secret_value)
        connection.secret_env_var = ""
        secret_changed = True
    elif fields.get("secret_env_var"):
        secret_changed = bool(connection.secret_ciphertext) or before.get("secret_env_var") != fields["secret_env_var"]
        connection.secret_ciphertext = ""
    connection.full_clean()
    if connection.pk and not secret_changed and not diff(before, snapshot(connection, fields)):
        return connection  # nothing changed: no history row, no audit event
    label = "Connection changed" if before else "Connection created"
    save_with_history(connection, by=by, reason=reason or label)
    changes = diff(before, snapshot(connection, fields or CONNECTION_FIELDS))
    if changes or secret_changed:
        _connection_event(
            connection,
            by,
            what,
            changes=changes,
            secret_location=connection.secret_label if secret_changed else None,
            why=reason or None,
        )
    return connection


def _set_connection_status(connection: Connection, *, by: User, reason: str, status: str, what: str) -> Connection:
    connection = Connection.objects.select_for_update().select_related("tenant").get(pk=connection.pk)
    require_tenant_permission(
        by, connection.tenant_id, "tools.revoke_connection", f"You may not revoke connections in {connection.tenant}."
    )
    if connection.status == status:
        raise ValidationError(f"{connection} is already {connection.get_status_display().lower()}.")
    connection.status = status
    connection.status_reason = reason
    connection.status_changed_at = timezone.now()
    connection.status_changed_by = by
    save_with_history(connection, by=by, reason=reason)
    tools = list(connection.tools.values_list("name", flat=True))
    _connection_event(connection, by, what, status=status, tools_affected=tools, why=reason)
    return connection


@transaction.atomic
def revoke_connection(*, connection: Connection, by: User, reason: str) -> Connection:
    """Block every tool using the connection from the next call on (the gateway reads the
    status at every call; nothing is cached). Approvals waiting on those tools are voided
    when they come to run."""
    reason = _required(reason, "the connection is revoked")
    return _set_connection_status(
        connection, by=by, reason=reason, status=ConnectionStatus.REVOKED, what="tools.connection_revoked"
    )


@transaction.atomic
def restore_connection(*, connection: Connection, by: User, reason: str) -> Connection:
    reason = _required(reason, "the connection is restored")
    return _set_connection_status(
        connection, by=by, reason=reason, status=ConnectionStatus.ACTIVE, what="tools.connection_restored"
    )


# --- Grants ---------------------------------------------------------------------------------


def _grant_payload(grant: Grant) -> dict:
    return {
        "grant": {"id": grant.pk, "role": grant.role.name, "role_kind": grant.role.kind, "tool": grant.tool.name},
        "conditions": snapshot(grant, GRANT_CONDITIONS),
    }


@transaction.atomic
def create_grant(*, by: User, role: Role, tool: Tool, note: str = "", **conditions: Any) -> Grant:
    _unknown(conditions, GRANT_CONDITIONS, "grant")
    require_tenant_permission(by, tool.tenant_id, "tools.add_grant", f"You may not grant tools in {tool.tenant}.")
    if Grant.objects.active().filter(role=role, tool=tool).exists():
        raise ValidationError(f"{role.name} already holds a grant for {tool.name}: change or revoke that one.")
    grant = Grant(tenant_id=tool.tenant_id, role=role, tool=tool, note=note, created_by=by, **conditions)
    grant.full_clean()
    save_with_history(grant, by=by, reason=note or "Grant created")
    record_change(by=by, tenant=tool.tenant, what="tools.grant_created", payload={**_grant_payload(grant), "why": note})
    return grant


@transaction.atomic
def update_grant(*, grant: Grant, by: User, reason: str = "", **conditions: Any) -> Grant:
    """Change a grant's effect, conditions or note (``conditions``)."""
    _unknown(conditions, (*GRANT_CONDITIONS, "note"), "grant")
    grant = Grant.objects.select_for_update().select_related("tenant", "role", "tool").get(pk=grant.pk)
    message = f"You may not change grants in {grant.tenant}."
    require_tenant_permission(by, grant.tenant_id, "tools.change_grant", message)
    if not grant.is_active:
        raise ValidationError("This grant is revoked: create a new one instead.")
    before = snapshot(grant, conditions)
    for field, value in conditions.items():
        setattr(grant, field, value)
    grant.full_clean()
    save_with_history(grant, by=by, reason=reason or "Grant changed")
    changes = diff(before, snapshot(grant, conditions))
    if changes:
        record_change(
            by=by,
            tenant=grant.tenant,
            what="tools.grant_changed",
            payload={**_grant_payload(grant), "changes": changes, "why": reason or None},
        )
    return grant


@transaction.atomic
def revoke_grant(*, grant: Grant, by: User, reason: str) -> Grant:
    """Take a tool away from a role, from the next call on. The grant row stays, revoked,
    with who, when and why."""
    reason = _required(reason, "the grant is revoked")
    grant = Grant.objects.select_for_update().select_related("tenant", "role", "tool").get(pk=grant.pk)
    message = f"You may not revoke grants in {grant.tenant}."
    require_tenant_permission(by, grant.tenant_id, "tools.change_grant", message)
    if not grant.is_active:
        raise ValidationError("This grant is already revoked.")
    grant.revoked_at = timezone.now()
    grant.revoked_by = by
    grant.revoke_reason = reason
    save_with_history(grant, by=by, reason=reason)
    record_change(
        by=by,
        tenant=grant.tenant,
        what="tools.grant_revoked",
        payload={**_grant_payload(grant), "last_used_at": grant.last_used_at, "why": reason},
    )
    return grant


# --- Agent allowlists -----------------------------------------------------------------------


@transaction.atomic
def allow_tool(*, agent: Agent, tool: Tool, by: User, reason: str = "") -> AgentTool:
    require_tenant_permission(
        by, agent.tenant_id, "tools.add_agenttool", f"You may not change agents' tools in {agent.tenant}."
    )
    allowance = AgentTool(agent=agent, tool=tool, added_by=by)
    allowance.full_clean()
    save_with_history(allowance, by=by, reason=reason or "Tool allowed")
    record_change(
        by=by,
        tenant=agent.tenant,
        agent=agent,
        what="tools.agent_tool_allowed",
        payload={"tool": {"id": tool.pk, "name": tool.name}, "why": reason or None},
    )
    return allowance


@transaction.atomic
def disallow_tool(*, allowance: AgentTool, by: User, reason: str) -> None:
    reason = _required(reason, "the tool is taken off the agent's allowlist")
    allowance = (
        AgentTool.objects.select_for_update(of=("self",))
        .select_related("agent__tenant", "tool")
        .filter(pk=allowance.pk)
        .first()
    )
    if allowance is None:
        raise ValidationError("This tool is no longer on the agent's allowlist.")
    message = f"You may not change agents' tools in {allowance.agent.tenant}."
    require_tenant_permission(by, allowance.agent.tenant_id, "tools.delete_agenttool", message)
    allowance._history_user = by
    allowance._change_reason = reason[:100]
    allowance.delete()
    record_change(
        by=by,
        tenant=allowance.agent.tenant,
        agent=allowance.agent,
        what="tools.agent_tool_removed",
        payload={"tool": {"id": allowance.tool.pk, "name": allowance.tool.name}, "why": reason},
    )
