"""Demo tools for ``manage.py seed_demo``: connections to the sandbox systems (served by
this control plane under /sandbox/, so the demo works offline), the tools that reach them
and the built-ins, grants per role, and each demo agent's allowlist.

Everything goes through the tool services as the security user, so the audit trail shows
who configured what. Idempotent by name: existing tools, grants and allowances are left as
they are. The sandbox keeps only its token's digest, so every run issues a new token and
stores it, encrypted, in the connections (the old one stops working).
"""

import copy
import datetime
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from apps.accounts.choices import RoleKind
from apps.accounts.models import Membership, Role, Tenant, User
from apps.accounts.services import assign_role
from apps.agents.models import Agent
from apps.sandbox.demo import seed_sandbox

from . import services
from .builtins import SCHEMAS
from .choices import AuthKind, ConnectorKind, Effect, HttpMethod, RiskTier
from .models import AgentTool, Connection, Grant, Tool

ORDER_ID = {"type": "string", "pattern": "^[A-Z]-[0-9]{4}$", "description": "The order number, e.g. A-1042."}
CUSTOMER_ID = {"type": "string", "pattern": "^C-[0-9]{4}$", "description": "The customer's id, e.g. C-1001."}


def _schema(required: list[str], **properties) -> dict:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


CONNECTIONS = {
    # key: (name, system, what it is)
    "orders": ("sandbox-orders", "Orders (sandbox)", "The pretend order system: look up orders."),
    "crm": ("sandbox-crm", "CRM (sandbox)", "The pretend CRM: customer notes, and deleting customers."),
    "payments": ("sandbox-payments", "Payments (sandbox)", "The pretend payment system: refunds (no money moves)."),
    "email": ("sandbox-email", "E-mail (sandbox)", "The pretend e-mail service: an outbox that never sends."),
}

BUILTIN = {"connector": ConnectorKind.BUILTIN}

TOOLS = [
    {
        "name": "knowledge.search",
        "description": "Search the approved knowledge base (policies, help articles, procedures) for passages that "
        "answer a question. Use it before answering any question about policy; cite what it returns.",
        "argument_schema": SCHEMAS["knowledge.search"],
        "builtin": "knowledge.search",
        "risk_tier": RiskTier.LOW,
        **BUILTIN,
    },
    {
        "name": "ticket.create",
        "description": "Open a support ticket for follow-up work a human must do later (not urgent help: use "
        "handoff.create for that). Give a short title and what needs doing.",
        "argument_schema": SCHEMAS["ticket.create"],
        "builtin": "ticket.create",
        "risk_tier": RiskTier.LOW,
        "writes": True,
        **BUILTIN,
    },
    {
        "name": "handoff.create",
        "description": "Hand the conversation to a human now, with the reason and a summary of what was tried. Use it "
        "when the customer asks for a person, is upset, or the request is outside what you may do.",
        "argument_schema": SCHEMAS["handoff.create"],
        "builtin": "handoff.create",
        "risk_tier": RiskTier.LOW,
        "writes": True,
        **BUILTIN,
    },
    {
        "name": "order.lookup",
        "description": "Look up one order by its number: items, total, status, and how much is still refundable.",
        "argument_schema": _schema(["order_id"], order_id=ORDER_ID),
        "connection": "orders",
        "http_method": HttpMethod.GET,
        "path_template": "/orders/{order_id}",
        "risk_tier": RiskTier.LOW,
    },
    {
        "name": "crm.read",
        "description": "Read the CRM notes the support team keeps on a customer, newest first.",
        "argument_schema": _schema(["customer_id"], customer_id=CUSTOMER_ID),
        "connection": "crm",
        "http_method": HttpMethod.GET,
        "path_template": "/customers/{customer_id}/notes",
        "risk_tier": RiskTier.LOW,
    },
    {
        "name": "crm.note_add",
        "description": "Add a note to a customer's CRM record, e.g. what the customer reported and what was agreed. "
        "Write facts, not guesses; never include payment details.",
        "argument_schema": _schema(
            ["customer_id", "text"],
            customer_id=CUSTOMER_ID,
            text={"type": "string", "minLength": 3, "maxLength": 2000, "description": "The note."},
        ),
        "connection": "crm",
        "http_method": HttpMethod.POST,
        "path_template": "/customers/{customer_id}/notes",
        "risk_tier": RiskTier.MEDIUM,
        "writes": True,
    },
    {
        "name": "refund.issue",
        "description": "Refund part or all of an order to the original payment method. Check the order with "
        "order.lookup first: the amount may not exceed what is still refundable. Cannot be undone.",
        "argument_schema": _schema(
            ["order_id", "amount", "reason"],
            order_id=ORDER_ID,
            amount={
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 100000,
                "description": "The amount to refund, in the order's currency, e.g. 89.00.",
            },
            reason={"type": "string", "minLength": 3, "maxLength": 500, "description": "Why, e.g. arrived damaged."},
        ),
        "connection": "payments",
        "http_method": HttpMethod.POST,
        "path_template": "/refunds",
        "risk_tier": RiskTier.HIGH,
        "writes": True,
        "reversible": False,
        "amount_field": "amount",
        "approval_sla_minutes": 30,
        "second_approver_above": Decimal("500.00"),
        "per_user_per_minute": 5,
    },
    {
        "name": "customer.email",
        "description": "Send the customer an e-mail. Reaches the customer directly and cannot be recalled: write "
        "it as the company, plainly, and only promise what has already been done.",
        "argument_schema": _schema(
            ["customer_id", "subject", "body"],
            customer_id=CUSTOMER_ID,
            subject={"type": "string", "minLength": 3, "maxLength": 200},
            body={"type": "string", "minLength": 10, "maxLength": 10000},
        ),
        "connection": "email",
        "http_method": HttpMethod.POST,
        "path_template": "/emails",
        "risk_tier": RiskTier.HIGH,
        "writes": True,
        "reversible": False,
        "external_facing": True,
    },
    {
        "name": "customer.delete",
        "description": "Delete a customer's record and CRM notes for good (a data-erasure request). Never use it "
        "for anything else; it cannot be undone.",
        "argument_schema": _schema(["customer_id"], customer_id=CUSTOMER_ID),
        "connection": "crm",
        "http_method": HttpMethod.DELETE,
        "path_template": "/customers/{customer_id}",
        "risk_tier": RiskTier.CRITICAL,
        "writes": True,
        "reversible": False,
    },
]

ALLOW = {}
GRANTS = {
    RoleKind.SUPPORT_AGENT: {
        "knowledge.search": ALLOW,
        "order.lookup": ALLOW,
        "crm.read": ALLOW,
        "crm.note_add": ALLOW,
        "ticket.create": ALLOW,
        "handoff.create": ALLOW,
        "refund.issue": {"max_amount": Decimal("100.00"), "requires_verified_subject": True},
        "customer.email": {"effect": Effect.REQUIRE_APPROVAL},
        "customer.delete": {"effect": Effect.DENY},
    },
    RoleKind.SUPPORT_LEAD: {
        "knowledge.search": ALLOW,
        "order.lookup": ALLOW,
        "crm.read": ALLOW,
        "crm.note_add": ALLOW,
        "handoff.create": ALLOW,
        # Leads approve what the agents ask for (never their own requests).
        "refund.issue": {"max_amount": Decimal("1000.00"), "may_approve": True},
        "customer.email": {"may_approve": True},
        "customer.delete": {"effect": Effect.REQUIRE_APPROVAL, "may_approve": True},
    },
    RoleKind.KNOWLEDGE_OWNER: {"knowledge.search": ALLOW},
    RoleKind.AGENT_OWNER: {"knowledge.search": ALLOW, "order.lookup": ALLOW},
    RoleKind.COMPLIANCE: {"crm.read": ALLOW},
}
GRANT_NOTE = "Demo grant (seed_demo)."
# One grant nobody uses, old enough for the "unused grants" report to list it.
UNUSED_GRANT = (RoleKind.COMPLIANCE, "crm.read")
UNUSED_GRANT_AGE = datetime.timedelta(days=60)

ALLOWLISTS = {
    "support-assistant": [
        "knowledge.search",
        "order.lookup",
        "crm.read",
        "crm.note_add",
        "ticket.create",
        "handoff.create",
    ],
    "refunds": ["order.lookup", "refund.issue", "crm.read", "handoff.create"],
    "it-helper": ["knowledge.search", "ticket.create"],
}


def seed_tools(*, tenant: Tenant, other_tenant: Tenant, people: dict, stdout=None) -> None:
    security = people[RoleKind.SECURITY]
    connections = _seed_connections(tenant, security, CONNECTIONS)
    tools = {spec["name"]: _seed_tool(tenant, security, spec, connections) for spec in TOOLS}
    new_grants = 0
    for kind, granted in GRANTS.items():
        role = Role.objects.get(tenant=tenant, kind=kind)
        for tool_name, conditions in granted.items():
            grant = _seed_grant(role, tools[tool_name], security, conditions)
            if grant is not None:
                new_grants += 1
                if (kind, tool_name) == UNUSED_GRANT:
                    # A demo fudge, not a governance change: only the timestamp moves, so no history row.
                    Grant.objects.filter(pk=grant.pk).update(created_at=timezone.now() - UNUSED_GRANT_AGE)
    new_allowances = 0
    for slug, tool_names in ALLOWLISTS.items():
        agent = Agent.objects.filter(tenant=tenant, slug=slug).first()
        if agent is None:
            continue
        for tool_name in tool_names:
            if not AgentTool.objects.filter(agent=agent, tool=tools[tool_name]).exists():
                services.allow_tool(agent=agent, tool=tools[tool_name], by=security, reason="Demo allowlist")
                new_allowances += 1
    _seed_other_tenant(other_tenant)
    waiting = _seed_pending_approvals(tenant, people[RoleKind.SUPPORT_AGENT])
    if stdout is not None:
        note = "" if settings.SANDBOX_ENABLED else " (the sandbox is off: set SANDBOX_ENABLED to reach it)"
        stdout.write(
            f"Tools: {len(tools)} tools on {len(connections)} sandbox connections for {tenant.name}, "
            f"{new_grants} new grants, {new_allowances} new allowlist entries; sandbox tokens rotated, stored "
            f"encrypted; {waiting} refund(s) waiting for approval at /approvals/; "
            f"{other_tenant.name} has order.lookup only. Sandbox: {settings.CONTROLPLANE_BASE_URL}/sandbox/"
            f"{note}."
        )


def _seed_connections(tenant: Tenant, security: User, specs: dict) -> dict[str, Connection]:
    """The tenant's sandbox connections, created or updated with a fresh sandbox token."""
    token = seed_sandbox(tenant)
    base_url = f"{settings.CONTROLPLANE_BASE_URL}/sandbox/{tenant.slug}"
    found = {}
    for key, (name, system, description) in specs.items():
        existing = Connection.objects.filter(tenant=tenant, name=name).first()
        if existing is None:
            found[key] = services.save_connection(
                by=security,
                tenant=tenant,
                secret_value=token,
                reason="Demo sandbox connection",
                name=name,
                system=system,
                description=f"{description} Served by this control plane for the demo; not a real system.",
                owner=security,
                auth_kind=AuthKind.BEARER,
                base_url=base_url,
            )
        else:
            found[key] = services.save_connection(
                by=security,
                connection=existing,
                secret_value=token,
                reason="Demo sandbox token rotated",
                base_url=base_url,
            )
    return found


def _seed_tool(tenant: Tenant, security: User, spec: dict, connections: dict[str, Connection]) -> Tool:
    existing = Tool.objects.filter(tenant=tenant, name=spec["name"]).first()
    if existing is not None:
        return existing
    fields = copy.deepcopy(spec)
    if "connection" in fields:
        fields.update(connection=connections[fields["connection"]], connector=ConnectorKind.HTTP)
    return services.save_tool(by=security, tenant=tenant, reason="Demo tool", **fields)


def _seed_grant(role: Role, tool: Tool, by: User, conditions: dict) -> Grant | None:
    """Grant ``tool`` to ``role`` unless it holds an active grant for it; the new grant or None."""
    if Grant.objects.active().filter(role=role, tool=tool).exists():
        return None
    return services.create_grant(by=by, role=role, tool=tool, note=GRANT_NOTE, **conditions)


# Refunds the Refunds agent asked for on agent.smith's behalf, waiting for a support lead:
# (order, customer, amount, what the customer said, what the agent said).
PENDING_REFUNDS = [
    (
        "A-1042",
        "C-1001",
        "89.00",
        "My blender from order A-1042 arrived with a cracked jar. I'd like my money back.",
        "The order was delivered damaged (CRM note: photo received) and is within the 30-day window, "
        "so I am asking for a full refund of 89.00.",
    ),
    (
        "A-1050",
        "C-1002",
        "45.00",
        "The kettle from A-1050 stopped working after two days.",
        "A product failure within 30 days qualifies for a refund under the refund policy; asking for 45.00.",
    ),
]


def _seed_pending_approvals(tenant: Tenant, support_agent: User) -> int:
    """Open today's demo refund requests through the gateway (once a day: the idempotency
    key names the date, so a second seed the same day opens nothing new). How many wait."""
    from apps.approvals.models import ApprovalRequest

    from .gateway import TurnContext, invoke

    agent = Agent.objects.filter(tenant=tenant, slug="refunds").first()
    if agent is None:
        return 0
    today = timezone.localdate().isoformat()
    for order_id, customer_id, amount, said, reason in PENDING_REFUNDS:
        context = TurnContext(
            tenant_id=tenant.pk,
            agent_id=agent.pk,
            user_id=support_agent.pk,
            channel="web_chat",
            subject=customer_id,
            subject_verified=True,
        )
        invoke(
            context,
            "refund.issue",
            {"order_id": order_id, "amount": float(amount), "reason": "Arrived damaged or faulty"},
            idempotency_key=f"demo:{today}:refund:{order_id}",
            approval_context={
                "conversation": [{"from": "customer", "text": said}],
                "agent_reason": reason,
                "sources": [{"source_id": None, "title": "Refund policy"}],
            },
        )
    return ApprovalRequest.objects.filter(tenant=tenant, agent=agent, status="pending").count()


def _seed_other_tenant(tenant: Tenant) -> None:
    """The second tenant gets its own sandbox, one connection, order.lookup and one grant,
    so the demo shows that nothing crosses between tenants."""
    security = _tenant_user(tenant, "globex.security", "Globex security", RoleKind.SECURITY)
    connections = _seed_connections(tenant, security, {"orders": CONNECTIONS["orders"]})
    lookup = _seed_tool(tenant, security, next(spec for spec in TOOLS if spec["name"] == "order.lookup"), connections)
    _seed_grant(Role.objects.get(tenant=tenant, kind=RoleKind.SUPPORT_AGENT), lookup, security, ALLOW)


def _tenant_user(tenant: Tenant, username: str, display_name: str, kind: str) -> User:
    """A user holding ``kind`` in ``tenant``, who cannot sign in (no password)."""
    user, created = User.objects.get_or_create(username=username, defaults={"display_name": display_name})
    if created:
        user.set_unusable_password()
        user.save()
    role = Role.objects.get(tenant=tenant, kind=kind)
    if not Membership.objects.filter(user=user, role=role).exists():
        assign_role(user=user, role=role)
    return user
