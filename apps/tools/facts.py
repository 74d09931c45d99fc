"""Everything the gateway decides on, in one read.

A decision needs the agent (status, tenant, rollout mode), the kill switches, the tool with
its connection and whether it is on the agent's allowlist, the acting user's roles in the
tenant, their active grants for the tool, and which guardrail policy versions are active.
Read one by one through the ORM that was six queries and about half of a call's time, most
of it Django compiling the queries (bench/gateway.py). Here it is one statement, written
once per database, sent as a prepared statement on PostgreSQL, with every value converted
exactly as the ORM converts it. Nothing is cached: a kill switch, a suspension, a revoked
grant or connection counts from the very next call.

The rules stay where they are: ``agents.services.run_permission`` decides whether the agent
may run, the gateway decides the rest; this module only reads.
"""

from dataclasses import dataclass, field
from functools import cache

from django.db import connection

from apps.accounts.models import Membership, Role, Tenant, User
from apps.agents.models import Agent, KillSwitch
from apps.agents.services import RunPermission, run_permission
from apps.audit import driver
from apps.guardrails.models import GuardrailPolicy
from apps.guardrails.services import policy_scopes

from .models import AgentTool, Connection, Grant, Tool

GRANT_FIELDS = (
    "id",
    "effect",
    "max_amount",
    "requires_verified_subject",
    "allowed_channels",
    "daily_limit_per_user",
    "last_used_at",
)


@dataclass
class Facts:
    run: RunPermission
    tool: Tool | None  # with ``on_allowlist`` set, and its connection loaded
    roles: list[tuple[int, str, str]] = field(default_factory=list)  # (id, kind, name)
    grants: list[dict] = field(default_factory=list)  # the tool's active grants to those roles
    # (scope, document) of the active guardrail versions, global, tenant, agent (None: none)
    policy_documents: tuple = ()


class _Columns:
    """Selected columns of one model, and how the ORM would convert their values."""

    def __init__(self, model, alias: str, names=None):
        fields = [f for f in model._meta.concrete_fields if names is None or f.name in names]
        if names is not None:
            fields.sort(key=lambda f: list(names).index(f.name))
        self.fields = fields
        quote = connection.ops.quote_name
        self.sql = ", ".join(f"{alias}.{quote(f.column)}" for f in fields)
        self.converters = []
        for f in fields:
            column = f.get_col(alias)
            self.converters.append(
                (column, connection.ops.get_db_converters(column) + column.get_db_converters(connection))
            )

    def __len__(self) -> int:
        return len(self.fields)

    def convert(self, values) -> list:
        converted = []
        for value, (column, converters) in zip(values, self.converters, strict=True):
            for converter in converters:
                value = converter(value, column, connection)
            converted.append(value)
        return converted


@dataclass(frozen=True)
class _Statement:
    sql: str
    tool: _Columns
    connection: _Columns
    grant: _Columns


@cache
def _statement(vendor: str, by_tool_id: bool) -> _Statement:
    """The read, for one database (``vendor`` keys the cache; the SQL is standard)."""
    quote = connection.ops.quote_name

    def table(model) -> str:
        return quote(model._meta.db_table)

    def col(model, name: str) -> str:
        return quote(model._meta.get_field(name).column)

    tool, conn = _Columns(Tool, "t"), _Columns(Connection, "c")
    grant = _Columns(Grant, "g", GRANT_FIELDS)

    def killed(scope_sql: str) -> str:
        return (
            f"(SELECT k.{col(KillSwitch, 'reason')} FROM {table(KillSwitch)} k "
            f"WHERE k.{col(KillSwitch, 'engaged')} AND k.{col(KillSwitch, 'scope')} = {scope_sql})"
        )

    def active_policy() -> str:
        return (
            f"(SELECT p.{col(GuardrailPolicy, 'document')} FROM {table(GuardrailPolicy)} p "
            f"WHERE p.{col(GuardrailPolicy, 'is_active')} AND p.{col(GuardrailPolicy, 'scope')} = %s)"
        )

    agent_tenant = f"a.{col(Agent, 'tenant')}"
    agent_id, tool_id = f"a.{col(Agent, 'id')}", f"t.{col(Tool, 'id')}"
    sql = f"""
SELECT a.{col(Agent, "status")}, {agent_tenant}, tn.{col(Tenant, "slug")}, tn.{col(Tenant, "name")},
  a.{col(Agent, "name")}, a.{col(Agent, "rollout_mode")},
  {killed("%s")}, {killed(f"('tenant:' || {agent_tenant})")},
  {active_policy()}, {active_policy()}, {active_policy()},
  {tool.sql},
  EXISTS (SELECT 1 FROM {table(AgentTool)} x
          WHERE x.{col(AgentTool, "agent")} = {agent_id} AND x.{col(AgentTool, "tool")} = {tool_id}),
  {conn.sql},
  r.{col(Role, "id")}, r.{col(Role, "kind")}, r.{col(Role, "name")},
  {grant.sql}
FROM {table(Agent)} a
JOIN {table(Tenant)} tn ON tn.{col(Tenant, "id")} = {agent_tenant}
LEFT JOIN {table(Tool)} t
  ON t.{col(Tool, "tenant")} = %s AND t.{col(Tool, "name")} = %s AND {agent_tenant} = %s
  {f"AND t.{col(Tool, 'id')} = %s" if by_tool_id else ""}
LEFT JOIN {table(Connection)} c ON c.{col(Connection, "id")} = t.{col(Tool, "connection")}
LEFT JOIN ({table(Membership)} m
           JOIN {table(Role)} r ON r.{col(Role, "id")} = m.{col(Membership, "role")}
           JOIN {table(User)} u ON u.{col(User, "id")} = m.{col(Membership, "user")})
  ON m.{col(Membership, "user")} = %s AND r.{col(Role, "tenant")} = %s AND u.{col(User, "is_active")}
LEFT JOIN {table(Grant)} g
  ON g.{col(Grant, "role")} = r.{col(Role, "id")} AND g.{col(Grant, "tool")} = t.{col(Tool, "id")}
  AND g.{col(Grant, "revoked_at")} IS NULL
WHERE {agent_id} = %s
"""
    return _Statement(sql, tool, conn, grant)


def _rows(sql: str, params: list) -> list:
    if connection.vendor == "postgresql":
        # Straight on the driver as a prepared statement: planned once per connection.
        with connection.wrap_database_errors, driver.cursor() as cursor:
            return cursor.execute(sql, params, prepare=True).fetchall()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def read(tenant_id: int, agent_id: int, user_id: int, tool_name: str, tool_id: int | None = None) -> Facts:
    """What a decision on ``tool_name`` (or, for an approved call, that very tool) needs,
    as of now. The tool is looked up only in the turn's tenant, and only if the agent
    belongs to it."""
    statement = _statement(connection.vendor, tool_id is not None)
    scopes = policy_scopes(tenant_id, agent_id)
    params = [
        KillSwitch.GLOBAL_SCOPE,
        *scopes,
        tenant_id,
        tool_name,
        tenant_id,
        *([tool_id] if tool_id is not None else []),
        user_id,
        tenant_id,
        agent_id,
    ]
    rows = _rows(statement.sql, params)
    if not rows:
        return Facts(run_permission(None), None)
    first = rows[0]
    status, agent_tenant, slug, tenant_name, agent_name, mode, global_kill, tenant_kill = first[:8]
    agent = {
        "status": status,
        "tenant_id": agent_tenant,
        "tenant__slug": slug,
        "tenant__name": tenant_name,
        "name": agent_name,
        "rollout_mode": mode,
    }
    facts = Facts(run_permission(agent, global_kill=global_kill, tenant_kill=tenant_kill), None)
    facts.policy_documents = tuple(zip(scopes, first[8:11], strict=True))
    at = 11
    tool_values = first[at : at + len(statement.tool)]
    at += len(statement.tool)
    on_allowlist = first[at]
    at += 1
    connection_values = first[at : at + len(statement.connection)]
    at += len(statement.connection)
    if tool_values[0] is not None:
        tool = Tool.from_db(connection.alias, None, statement.tool.convert(tool_values))
        tool.on_allowlist = bool(on_allowlist)
        linked = None
        if connection_values[0] is not None:
            linked = Connection.from_db(connection.alias, None, statement.connection.convert(connection_values))
        Tool._meta.get_field("connection").set_cached_value(tool, linked)
        facts.tool = tool
    roles = {}
    for row in rows:
        role_id, kind, role_name = row[at : at + 3]
        if role_id is None:
            continue
        roles[role_id] = (role_id, kind, role_name)
        grant_values = row[at + 3 :]
        if grant_values[0] is not None:
            grant = dict(zip(GRANT_FIELDS, statement.grant.convert(grant_values), strict=True))
            grant["pk"] = grant.pop("id")
            grant["role__name"] = role_name
            facts.grants.append(grant)
    facts.roles = sorted(roles.values())
    facts.grants.sort(key=lambda grant: grant["pk"])
    return facts
