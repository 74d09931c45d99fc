"""What the admin and the API read about tools, connections, grants and calls: the rows a
user may see, with related rows chosen once, and the "permissions granted vs used" report."""

import datetime
from dataclasses import dataclass, field

from django.db.models import Count, Max, QuerySet
from django.utils import timezone

from apps.accounts.models import Role, Tenant, User
from apps.accounts.permissions import tenant_ids_with_permission
from apps.agents.models import Agent

from .choices import Outcome
from .models import AgentTool, Connection, Grant, Tool, ToolCall

UNUSED_AFTER_DAYS = 30
# The gateway's reason code for a call to a tool the agent's allowlist does not hold.
NOT_ON_ALLOWLIST = "not_on_allowlist"


# --- Rows a user may see (pages and the API) ----------------------------------------------


def tools_visible_to(user: User) -> QuerySet[Tool]:
    return Tool.objects.for_user(user, "view").with_list_relations().order_by("tenant__name", "name")


def connections_visible_to(user: User) -> QuerySet[Connection]:
    return (
        Connection.objects.for_user(user, "view")
        .select_related("tenant", "owner", "status_changed_by")
        .order_by("tenant__name", "name")
    )


def grants_visible_to(user: User) -> QuerySet[Grant]:
    return (
        Grant.objects.for_user(user, "view")
        .select_related("tenant", "role", "tool", "created_by", "revoked_by")
        .order_by("tenant__name", "role__name", "tool__name", "-created_at")
    )


def tool_calls_visible_to(user: User) -> QuerySet[ToolCall]:
    return ToolCall.objects.for_user(user, "view").select_related("tenant", "agent", "user").order_by("-created_at")


# --- Permissions granted vs used ------------------------------------------------------------


def approver_roles(pairs) -> dict[tuple[int, str], set[int]]:
    """For (tenant id, tool name) pairs, the roles whose active grant for the tool lets
    their holders approve its requests (registered with the approvals app). One query."""
    pairs = set(pairs)
    rows = Grant.objects.active().filter(
        may_approve=True,
        tenant_id__in={tenant_id for tenant_id, _ in pairs},
        tool__name__in={tool_name for _, tool_name in pairs},
    )
    found: dict[tuple[int, str], set[int]] = {}
    for tenant_id, tool_name, role_id in rows.values_list("tenant_id", "tool__name", "role_id"):
        if (tenant_id, tool_name) in pairs:
            found.setdefault((tenant_id, tool_name), set()).add(role_id)
    return found


def conditions_summary(grant: Grant) -> str:
    """A grant's conditions in a few words, e.g. "up to 100.00; verified customer only"."""
    parts = []
    if grant.max_amount is not None:
        parts.append(f"up to {grant.max_amount}")
    if grant.requires_verified_subject:
        parts.append("verified customer only")
    if grant.allowed_channels:
        parts.append(", ".join(grant.allowed_channels))
    if grant.daily_limit_per_user:
        parts.append(f"{grant.daily_limit_per_user} calls per person per day")
    return "; ".join(parts) or "none"


@dataclass(frozen=True)
class GrantUse:
    grant: Grant
    idle_since: datetime.datetime  # when it last authorised a call, or was made if it never did
    days_unused: int
    unused: bool  # idle for at least the report's number of days
    may_revoke: bool

    @property
    def conditions(self) -> str:
        return conditions_summary(self.grant)


@dataclass
class RoleGrants:
    role: Role
    grants: list[GrantUse] = field(default_factory=list)

    @property
    def unused_count(self) -> int:
        return sum(1 for use in self.grants if use.unused)


@dataclass(frozen=True)
class AllowedToolUse:
    allowance: AgentTool
    last_executed_at: datetime.datetime | None

    @property
    def never_used(self) -> bool:
        return self.last_executed_at is None


@dataclass(frozen=True)
class CallsOutsideAllowlist:
    tool_name: str
    attempts: int
    last_attempt_at: datetime.datetime


@dataclass
class AgentToolUses:
    agent: Agent
    allowed: list[AllowedToolUse] = field(default_factory=list)
    outside: list[CallsOutsideAllowlist] = field(default_factory=list)

    @property
    def never_used_count(self) -> int:
        return sum(1 for use in self.allowed if use.never_used)


@dataclass
class TenantUsage:
    tenant: Tenant
    roles: list[RoleGrants] = field(default_factory=list)
    agents: list[AgentToolUses] = field(default_factory=list)
    shows_agents: bool = False

    @property
    def roles_with_grants(self) -> list[RoleGrants]:
        return [role for role in self.roles if role.grants]

    @property
    def roles_without_grants(self) -> list[str]:
        return [role.role.name for role in self.roles if not role.grants]

    @property
    def outside_count(self) -> int:
        return sum(len(entry.outside) for entry in self.agents)


@dataclass
class UsageReport:
    days: int
    generated_at: datetime.datetime
    tenants: list[TenantUsage]

    @property
    def unused_grant_count(self) -> int:
        return sum(role.unused_count for tenant in self.tenants for role in tenant.roles)


def _within(queryset: QuerySet, path: str, tenant_ids: set[int] | None) -> QuerySet:
    return queryset if tenant_ids is None else queryset.filter(**{f"{path}__in": tenant_ids})


def grant_usage_report(
    user: User, *, days: int = UNUSED_AFTER_DAYS, now: datetime.datetime | None = None, tenant_id: int | None = None
) -> UsageReport:
    """For each tenant where ``user`` may view grants: each role's active grants and how long
    each has gone unused (a grant that never authorised a call counts from its creation);
    and, where the user may also view tool calls, each agent's allowlisted tools with when
    the agent last executed each, and the tools it tried to call outside its allowlist.
    ``tenant_id`` narrows the report to that one tenant (the governance dashboard's).

    A fixed number of queries whatever the number of roles, grants, agents or calls: rows
    are read per kind and call history is aggregated in the database.
    """
    now = now or timezone.now()
    cutoff = now - datetime.timedelta(days=days)
    grant_tenants = tenant_ids_with_permission(user, "tools.view_grant")
    call_tenants = tenant_ids_with_permission(user, "tools.view_toolcall")
    revoke_tenants = tenant_ids_with_permission(user, "tools.change_grant")
    if tenant_id is not None:  # that one tenant, where the user may see it at all
        grant_tenants = {tenant_id} if grant_tenants is None or tenant_id in grant_tenants else set()
        call_tenants = {tenant_id} if call_tenants is None or tenant_id in call_tenants else set()
    if grant_tenants is not None and not grant_tenants:
        return UsageReport(days=days, generated_at=now, tenants=[])
    if grant_tenants is not None and call_tenants is not None:
        call_tenants &= grant_tenants

    tenants = list(_within(Tenant.objects.filter(is_active=True), "pk", grant_tenants).order_by("name"))
    usage = {tenant.pk: TenantUsage(tenant=tenant) for tenant in tenants}
    tenant_ids = set(usage)

    roles: dict[int, RoleGrants] = {}
    for role in Role.objects.filter(tenant__in=tenant_ids).order_by("name"):
        roles[role.pk] = RoleGrants(role=role)
        usage[role.tenant_id].roles.append(roles[role.pk])
    grants = Grant.objects.active().filter(tenant__in=tenant_ids).select_related("tool").order_by("tool__name")
    for grant in grants:
        if grant.role_id not in roles:  # a role of another tenant: the model's clean() forbids it
            continue
        idle_since = grant.last_used_at or grant.created_at
        roles[grant.role_id].grants.append(
            GrantUse(
                grant=grant,
                idle_since=idle_since,
                days_unused=max((now - idle_since).days, 0),
                unused=idle_since <= cutoff,
                may_revoke=revoke_tenants is None or grant.tenant_id in revoke_tenants,
            )
        )

    agent_tenants = tenant_ids if call_tenants is None else tenant_ids & call_tenants
    for tenant_id in agent_tenants:
        usage[tenant_id].shows_agents = True
    agents: dict[int, AgentToolUses] = {}
    for agent in Agent.objects.filter(tenant__in=agent_tenants).order_by("name"):
        agents[agent.pk] = AgentToolUses(agent=agent)
        usage[agent.tenant_id].agents.append(agents[agent.pk])
    calls = ToolCall.objects.filter(tenant__in=agent_tenants, agent__isnull=False).order_by()
    last_executed = {
        (row["agent_id"], row["tool_id"]): row["last"]
        for row in calls.filter(outcome=Outcome.EXECUTED, tool__isnull=False)
        .values("agent_id", "tool_id")
        .annotate(last=Max("created_at"))
    }
    allowances = AgentTool.objects.filter(agent__tenant__in=agent_tenants).select_related("tool", "added_by")
    for allowance in allowances.order_by("tool__name"):
        agents[allowance.agent_id].allowed.append(
            AllowedToolUse(
                allowance=allowance, last_executed_at=last_executed.get((allowance.agent_id, allowance.tool_id))
            )
        )
    outside = (
        calls.filter(reason_code=NOT_ON_ALLOWLIST)
        .values("agent_id", "tool_name")
        .annotate(attempts=Count("pk"), last=Max("created_at"))
        .order_by("agent_id", "-last")
    )
    for row in outside:
        if row["agent_id"] in agents:
            agents[row["agent_id"]].outside.append(
                CallsOutsideAllowlist(tool_name=row["tool_name"], attempts=row["attempts"], last_attempt_at=row["last"])
            )
    return UsageReport(days=days, generated_at=now, tenants=[usage[tenant.pk] for tenant in tenants])
