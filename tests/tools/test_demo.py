"""The demo's tools: seed_demo configures connections to the sandbox (secrets encrypted,
never printed), the tools, grants and allowlists the story needs, through the services
(so the audit trail shows who did it), and can run twice. A seeded agent then really
reaches the sandbox through the gateway."""

import datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.accounts.choices import RoleKind
from apps.accounts.models import Tenant, User
from apps.agents.models import Agent
from apps.sandbox.models import SandboxAccount
from apps.sandbox.services import token_digest
from apps.tools import gateway, secrets
from apps.tools.choices import ConnectorKind, Effect, Outcome, RiskTier
from apps.tools.models import AgentTool, Connection, Grant, Tool
from tests.audit.helpers import chained

from .factories import context_for

SANDBOX_CONNECTIONS = {"sandbox-orders", "sandbox-crm", "sandbox-payments", "sandbox-email"}
TOOL_NAMES = {
    "knowledge.search",
    "ticket.create",
    "handoff.create",
    "order.lookup",
    "crm.read",
    "crm.note_add",
    "refund.issue",
    "customer.email",
    "customer.delete",
}


def _seed() -> str:
    output = StringIO()
    call_command("seed_demo", stdout=output)
    return output.getvalue()


@pytest.fixture
def seeded(settings, mailoutbox, db):
    settings.DEBUG = True
    return _seed()


def _acme() -> Tenant:
    return Tenant.objects.get(slug="acme")


def _grants(tenant) -> dict[tuple[str, str], Grant]:
    return {
        (grant.role.kind, grant.tool.name): grant
        for grant in Grant.objects.active().filter(tenant=tenant).select_related("role", "tool")
    }


@pytest.mark.django_db
def test_connections_reach_the_sandbox_with_an_encrypted_token(seeded, settings):
    acme = _acme()
    connections = Connection.objects.filter(tenant=acme)
    assert set(connections.values_list("name", flat=True)) == SANDBOX_CONNECTIONS
    account = SandboxAccount.objects.get(tenant=acme)
    for connection in connections:
        assert connection.owner.username == "sam.security"
        assert connection.base_url == f"{settings.CONTROLPLANE_BASE_URL}/sandbox/acme"
        assert connection.secret_env_var == ""
        token = secrets.reveal(connection)
        assert token not in connection.secret_ciphertext
        assert token_digest(token) == account.token_digest
        assert token not in seeded
    assert "(sandbox)" in connections.get(name="sandbox-payments").system


@pytest.mark.django_db
def test_tools_are_configured_as_the_story_needs(seeded):
    tools = {tool.name: tool for tool in Tool.objects.filter(tenant=_acme()).select_related("connection")}
    assert set(tools) == TOOL_NAMES
    for name in ("knowledge.search", "ticket.create", "handoff.create"):
        assert tools[name].connector == ConnectorKind.BUILTIN
        assert tools[name].builtin == name
    refund = tools["refund.issue"]
    assert (refund.risk_tier, refund.writes, refund.reversible) == (RiskTier.HIGH, True, False)
    assert (refund.connection.name, refund.http_method, refund.path_template) == (
        "sandbox-payments",
        "POST",
        "/refunds",
    )
    assert refund.amount_field == "amount"
    assert refund.per_user_per_minute == 5
    assert tools["customer.email"].external_facing
    assert tools["customer.delete"].risk_tier == RiskTier.CRITICAL
    assert tools["crm.note_add"].risk_tier == RiskTier.MEDIUM
    assert not tools["order.lookup"].writes
    for tool in tools.values():
        assert tool.argument_schema["additionalProperties"] is False


@pytest.mark.django_db
def test_grants_follow_the_roles(seeded):
    grants = _grants(_acme())
    agent_refund = grants[(RoleKind.SUPPORT_AGENT, "refund.issue")]
    assert agent_refund.effect == Effect.ALLOW
    assert agent_refund.max_amount == Decimal("100.00")
    assert agent_refund.requires_verified_subject
    assert grants[(RoleKind.SUPPORT_AGENT, "customer.email")].effect == Effect.REQUIRE_APPROVAL
    assert grants[(RoleKind.SUPPORT_AGENT, "customer.delete")].effect == Effect.DENY
    assert grants[(RoleKind.SUPPORT_LEAD, "refund.issue")].max_amount == Decimal("1000.00")
    assert grants[(RoleKind.SUPPORT_LEAD, "customer.email")].effect == Effect.ALLOW
    assert grants[(RoleKind.SUPPORT_LEAD, "customer.delete")].effect == Effect.REQUIRE_APPROVAL
    assert {tool for kind, tool in grants if kind == RoleKind.KNOWLEDGE_OWNER} == {"knowledge.search"}
    assert {tool for kind, tool in grants if kind == RoleKind.AGENT_OWNER} == {"knowledge.search", "order.lookup"}
    assert len(grants) == 9 + 8 + 1 + 2 + 1
    unused = grants[(RoleKind.COMPLIANCE, "crm.read")]
    assert unused.created_at < timezone.now() - datetime.timedelta(days=59)
    assert unused.last_used_at is None


@pytest.mark.django_db
def test_allowlists_and_audit(seeded):
    allowed = {
        slug: set(
            AgentTool.objects.filter(agent__tenant=_acme(), agent__slug=slug).values_list("tool__name", flat=True)
        )
        for slug in ("support-assistant", "refunds", "it-helper")
    }
    assert allowed == {
        "support-assistant": {
            "knowledge.search",
            "order.lookup",
            "crm.read",
            "crm.note_add",
            "ticket.create",
            "handoff.create",
        },
        "refunds": {"order.lookup", "refund.issue", "crm.read", "handoff.create"},
        "it-helper": {"knowledge.search", "ticket.create"},
    }
    security = User.objects.get(username="sam.security")
    changes = chained(event_type="config.changed", actor_id=security.pk, tenant_id=_acme().pk)
    assert changes.filter(reason="tools.tool_created").count() == len(TOOL_NAMES)
    assert changes.filter(reason="tools.connection_created").count() == len(SANDBOX_CONNECTIONS)
    assert changes.filter(reason="tools.grant_created").count() == 21
    assert changes.filter(reason="tools.agent_tool_allowed").count() == 12


@pytest.mark.django_db
def test_the_other_tenant_gets_its_own_sandbox_and_one_tool(seeded):
    globex = Tenant.objects.get(slug="globex")
    connection = Connection.objects.get(tenant=globex)
    assert connection.base_url.endswith("/sandbox/globex")
    assert set(Tool.objects.filter(tenant=globex).values_list("name", flat=True)) == {"order.lookup"}
    assert set(_grants(globex)) == {(RoleKind.SUPPORT_AGENT, "order.lookup")}
    acme_token = secrets.reveal(Connection.objects.get(tenant=_acme(), name="sandbox-orders"))
    assert secrets.reveal(connection) != acme_token
    assert token_digest(secrets.reveal(connection)) == SandboxAccount.objects.get(tenant=globex).token_digest


@pytest.mark.django_db
def test_seeding_twice_adds_nothing_and_rotates_the_token(seeded):
    acme = _acme()
    old_token = secrets.reveal(Connection.objects.get(tenant=acme, name="sandbox-orders"))
    before = (Tool.objects.count(), Grant.objects.count(), AgentTool.objects.count(), Connection.objects.count())
    output = _seed()
    assert (
        Tool.objects.count(),
        Grant.objects.count(),
        AgentTool.objects.count(),
        Connection.objects.count(),
    ) == before
    new_tokens = {secrets.reveal(connection) for connection in Connection.objects.filter(tenant=acme)}
    assert len(new_tokens) == 1
    new_token = new_tokens.pop()
    assert new_token != old_token
    assert token_digest(new_token) == SandboxAccount.objects.get(tenant=acme).token_digest
    assert new_token not in output
    assert "0 new grants" in output
    unused = _grants(acme)[(RoleKind.COMPLIANCE, "crm.read")]
    assert unused.created_at < timezone.now() - datetime.timedelta(days=59)


@pytest.mark.django_db(transaction=True)
def test_a_seeded_agent_looks_up_an_order_in_the_live_sandbox(settings, mailoutbox, live_server):
    settings.DEBUG = True
    settings.CONTROLPLANE_BASE_URL = live_server.url
    _seed()
    assistant = Agent.objects.get(tenant__slug="acme", slug="support-assistant")
    smith = User.objects.get(username="agent.smith")
    context = context_for(assistant, smith, channel="web_chat", subject="C-1001")
    result = gateway.invoke(context, "order.lookup", {"order_id": "A-1042"})
    assert result.outcome == Outcome.EXECUTED, result.message
    assert result.data["order"]["total"] == "89.00"
    # The assistant may not refund (not on its allowlist), whatever agent.smith's grants say.
    refused = gateway.invoke(context, "refund.issue", {"order_id": "A-1042", "amount": 10, "reason": "Damaged"})
    assert refused.reason_code == "not_on_allowlist"


@pytest.mark.django_db(transaction=True)
def test_a_seeded_agent_reads_only_its_customers_orders_in_the_live_sandbox(settings, mailoutbox, live_server):
    settings.DEBUG = True
    settings.CONTROLPLANE_BASE_URL = live_server.url
    _seed()
    assistant = Agent.objects.get(tenant__slug="acme", slug="support-assistant")
    smith = User.objects.get(username="agent.smith")
    context = context_for(assistant, smith, channel="web_chat", subject="C-1001", subject_verified=True)

    own = gateway.invoke(context, "order.lookup", {"order_id": "A-1043"})
    others = gateway.invoke(context, "order.lookup", {"order_id": "A-1050"})  # C-1002's kettle
    unknown = gateway.invoke(context, "order.lookup", {"order_id": "A-9999"})

    assert own.outcome == Outcome.EXECUTED, own.message
    assert own.data["order"]["customer_id"] == "C-1001"
    assert others.outcome == unknown.outcome == Outcome.FAILED
    assert others.message == "Orders (sandbox) answered 404: There is no order A-1050 in this sandbox."
    assert others.message == unknown.message.replace("A-9999", "A-1050")
    assert "marta" not in str(others.for_model()).lower()
