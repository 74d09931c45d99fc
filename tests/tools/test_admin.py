"""Security's admin pages for connections, tools, grants, allowlists and tool calls: each
person sees and changes only their tenants' rows, every write goes through the services
(so it is checked and audited), what a service refuses shows on the form, and a
connection's secret appears on no page."""

import json
import uuid

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.accounts.models import Role
from apps.tools import secrets, services
from apps.tools.choices import AuthKind, ConnectionStatus, ConnectorKind, Effect, Outcome, RiskTier
from apps.tools.models import AgentTool, Connection, Grant, Tool, ToolCall

from ..accounts.factories import member
from ..agents.factories import AgentFactory
from ..audit.helpers import chained
from .factories import allow, builtin_tool, connection, grant, http_tool

pytestmark = pytest.mark.django_db

SECRET = "sk-test-SECRET-value-123456"


def url(model: str, view: str, *args) -> str:
    return reverse(f"admin:tools_{model}_{view}", args=args)


def logged_in(client, user):
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def call(tenant, tool=None, *, agent=None, user=None, outcome=Outcome.EXECUTED, **fields) -> ToolCall:
    return ToolCall.objects.create(
        idempotency_key=str(uuid.uuid4()),
        tenant=tenant,
        tool=tool,
        tool_name=fields.pop("tool_name", tool.name if tool else "unknown.tool"),
        agent=agent,
        user=user,
        action_digest="0" * 64,
        outcome=outcome,
        **fields,
    )


@pytest.fixture
def security(people):
    return people["security"]


@pytest.fixture
def globex_security(other_tenant):
    return member(other_tenant, "security", username="globex.security")


@pytest.fixture
def orders(tenant, security):
    return connection(tenant, security, secret=SECRET)


# --- Who gets in --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["connection", "tool", "grant", "toolcall", "agenttool"])
def test_support_agent_cannot_open_the_tools_admin(client, people, model):
    response = logged_in(client, people["support_agent"]).get(url(model, "changelist"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


@pytest.mark.parametrize("model", ["connection", "tool", "grant", "toolcall", "agenttool"])
def test_knowledge_owner_has_no_tools_pages(client, people, model):
    assert logged_in(client, people["knowledge_owner"]).get(url(model, "changelist")).status_code == 403


@pytest.mark.parametrize("page", ["connection", "tool", "grant"])
def test_security_can_open_the_add_pages(client, security, page):
    assert logged_in(client, security).get(url(page, "add")).status_code == 200


# --- Connections --------------------------------------------------------------------------------


def connection_form(tenant, owner, **overrides) -> dict:
    data = {
        "tenant": str(tenant.pk),
        "system": "Shopify",
        "name": "shop",
        "description": "",
        "owner": str(owner.pk),
        "auth_kind": AuthKind.BEARER,
        "auth_header": "X-API-Key",
        "base_url": "https://shop.example.com/api",
        "secret_env_var": "",
        "new_secret_value": "",
        "reason": "",
    }
    data.update(overrides)
    return data


def test_connection_list_is_scoped_to_the_users_tenants(client, tenant, other_tenant, security, globex_security):
    connection(tenant, security, name="acme-orders", system="Acme orders")
    connection(other_tenant, globex_security, name="globex-orders", system="Globex orders")
    response = logged_in(client, security).get(url("connection", "changelist"))
    assert [row.name for row in response.context["cl"].result_list] == ["acme-orders"]
    assert "Globex" not in response.content.decode()  # not even in the filters


def test_connection_list_shows_where_the_secret_lives_and_last_use(client, tenant, security, orders):
    by_env = connection(tenant, security, name="crm", system="CRM", env_var="CRM_TOKEN")
    tool = http_tool(tenant, orders)
    call(tenant, tool)
    latest = call(tenant, tool, outcome=Outcome.DENIED)
    response = logged_in(client, security).get(url("connection", "changelist"))
    rows = {row.name: row for row in response.context["cl"].result_list}
    assert rows["sandbox-orders"].last_used_at == latest.created_at
    assert rows["crm"].last_used_at is None
    content = response.content.decode()
    assert "environment variable CRM_TOKEN" in content
    assert "encrypted value (stored)" in content
    assert by_env.secret_label in content


def test_connection_changelist_queries_do_not_grow_with_rows(client, tenant, security):
    client = logged_in(client, security)

    def measure() -> tuple[int, int]:
        with CaptureQueriesContext(db_connection) as queries:
            response = client.get(url("connection", "changelist"))
        return len(response.context["cl"].result_list), len(queries)

    def add(first: int, last: int) -> None:
        for number in range(first, last):
            made = connection(tenant, security, name=f"system-{number}", secret=SECRET)
            call(tenant, http_tool(tenant, made, name=f"refund.issue_{number}"))

    add(0, 2)
    few_rows, few_queries = measure()
    add(2, 12)
    many_rows, many_queries = measure()
    assert (few_rows, many_rows) == (2, 12)
    assert few_queries == many_queries


def test_connection_secret_appears_on_no_admin_page(client, tenant, security):
    client = logged_in(client, security)
    response = client.post(
        url("connection", "add"), connection_form(tenant, security, new_secret_value=SECRET, reason="New shop")
    )
    assert response.status_code == 302, response.content.decode()
    made = Connection.objects.get(name="shop")
    assert made.secret_ciphertext and SECRET not in made.secret_ciphertext
    assert secrets.reveal(made) == SECRET  # stored, encrypted, for connectors only
    pages = [
        url("connection", "changelist"),
        url("connection", "change", made.pk),
        url("connection", "history", made.pk),
        reverse("admin:tools_connection_simple_history", args=[made.pk, made.history.first().history_id]),
        url("connection", "revoke", made.pk),
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        assert SECRET.encode() not in response.content, page
        assert made.secret_ciphertext.encode() not in response.content, page
    (event,) = chained(event_type="config.changed", reason="tools.connection_created")
    assert SECRET not in event.body


def test_secret_field_is_write_only_even_after_a_refused_save(client, tenant, security, orders):
    client = logged_in(client, security)
    page = client.get(url("connection", "change", orders.pk)).content.decode()
    assert 'name="new_secret_value"' in page
    assert 'type="password"' in page
    assert SECRET not in page
    # Both a new value and a new environment variable: refused, and the value is not echoed.
    data = connection_form(tenant, security, name=orders.name, new_secret_value=SECRET, secret_env_var="ORDERS_TOKEN")
    data.pop("tenant")
    response = client.post(url("connection", "change", orders.pk), data)
    assert response.status_code == 200
    assert "not both" in response.content.decode()
    assert SECRET.encode() not in response.content


def test_saving_a_connection_goes_through_the_service(client, tenant, security, orders):
    data = connection_form(tenant, security, name=orders.name, secret_env_var="ORDERS_TOKEN", reason="Vault move")
    data.pop("tenant")
    response = logged_in(client, security).post(url("connection", "change", orders.pk), data)
    assert response.status_code == 302
    orders.refresh_from_db()
    assert (orders.secret_env_var, orders.secret_ciphertext) == ("ORDERS_TOKEN", "")
    (event,) = chained(event_type="config.changed", reason="tools.connection_changed")
    assert event.data["payload"]["why"] == "Vault move"
    assert orders.history.first().history_user == security


def test_a_refusal_by_the_service_is_a_form_error_not_a_server_error(client, tenant, security, orders):
    """The tenant is read-only on the change form, so the form cannot check the name is free
    in the tenant; the service does, and its refusal lands on the name field."""
    other = connection(tenant, security, name="crm", system="CRM")
    data = connection_form(tenant, security, name=orders.name, system="CRM")
    data.pop("tenant")
    response = logged_in(client, security).post(url("connection", "change", other.pk), data)
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [
        "Connection with this Tenant and Name already exists."
    ]
    other.refresh_from_db()
    assert other.name == "crm"
    assert not chained(event_type="config.changed").exists()


def test_revoke_and_restore_buttons_ask_why_and_call_the_service(client, tenant, security, orders):
    client = logged_in(client, security)
    page = client.get(url("connection", "change", orders.pk)).content.decode()
    assert url("connection", "revoke", orders.pk) in page
    assert url("connection", "restore", orders.pk) not in page

    refused = client.post(url("connection", "revoke", orders.pk), {"reason": "  "})
    assert refused.status_code == 200
    assert "Say why the connection is revoked" in refused.content.decode()
    orders.refresh_from_db()
    assert orders.status == ConnectionStatus.ACTIVE

    response = client.post(url("connection", "revoke", orders.pk), {"reason": "Key leaked in a ticket"})
    assert response.status_code == 302
    orders.refresh_from_db()
    assert (orders.status, orders.status_reason, orders.status_changed_by) == (
        ConnectionStatus.REVOKED,
        "Key leaked in a ticket",
        security,
    )
    assert chained(event_type="config.changed", reason="tools.connection_revoked").count() == 1
    page = client.get(url("connection", "change", orders.pk)).content.decode()
    assert url("connection", "restore", orders.pk) in page

    client.post(url("connection", "restore", orders.pk), {"reason": "Key rotated"})
    orders.refresh_from_db()
    assert orders.status == ConnectionStatus.ACTIVE


def test_bulk_revoke_asks_why_first(client, tenant, security, orders):
    crm = connection(tenant, security, name="crm", system="CRM")
    client = logged_in(client, security)
    selected = {"action": "revoke_selected", ACTION_CHECKBOX_NAME: [orders.pk, crm.pk]}
    asking = client.post(url("connection", "changelist"), selected)
    assert asking.status_code == 200
    assert "Reason (required)" in asking.content.decode()
    assert not Connection.objects.filter(status=ConnectionStatus.REVOKED).exists()

    done = client.post(url("connection", "changelist"), {**selected, "apply": "1", "reason": "Vendor breach"})
    assert done.status_code == 302
    assert set(Connection.objects.values_list("status", flat=True)) == {ConnectionStatus.REVOKED}
    assert chained(event_type="config.changed", reason="tools.connection_revoked").count() == 2


def test_compliance_reads_connections_but_cannot_change_or_revoke(client, security, people, orders):
    client = logged_in(client, people["compliance"])
    page = client.get(url("connection", "change", orders.pk))
    assert page.status_code == 200
    assert url("connection", "revoke", orders.pk) not in page.content.decode()
    assert SECRET.encode() not in page.content
    assert client.post(url("connection", "revoke", orders.pk), {"reason": "x"}).status_code == 403
    response = client.post(url("connection", "change", orders.pk), {"name": "hijacked"})
    assert response.status_code == 403
    orders.refresh_from_db()
    assert (orders.status, orders.name) == (ConnectionStatus.ACTIVE, "sandbox-orders")


def test_another_tenants_security_cannot_see_or_change_acmes_connection(client, globex_security, orders):
    client = logged_in(client, globex_security)
    change = client.get(url("connection", "change", orders.pk))
    assert change.status_code == 302  # "does not exist", back to the admin index
    assert client.get(url("connection", "history", orders.pk)).status_code in (403, 404)
    assert client.post(url("connection", "revoke", orders.pk), {"reason": "x"}).status_code == 404
    bulk = client.post(
        url("connection", "changelist"),
        {"action": "revoke_selected", ACTION_CHECKBOX_NAME: [orders.pk], "apply": "1", "reason": "x"},
    )
    assert bulk.status_code in (200, 302)
    orders.refresh_from_db()
    assert orders.status == ConnectionStatus.ACTIVE
    assert not chained(event_type="config.changed").exists()


# --- Tools --------------------------------------------------------------------------------------


def inline_rows(tool=None, rows=(), new_agents=()) -> dict:
    """The allowlist inline's POST data: existing allowances (optionally deleted) and new agents."""
    data = {
        "agent_allowances-TOTAL_FORMS": str(len(rows) + len(new_agents)),
        "agent_allowances-INITIAL_FORMS": str(len(rows)),
        "agent_allowances-MIN_NUM_FORMS": "0",
        "agent_allowances-MAX_NUM_FORMS": "1000",
    }
    for index, (allowance, delete) in enumerate(rows):
        data[f"agent_allowances-{index}-id"] = str(allowance.pk)
        data[f"agent_allowances-{index}-tool"] = str(tool.pk)
        if delete:
            data[f"agent_allowances-{index}-DELETE"] = "on"
    for index, agent in enumerate(new_agents, start=len(rows)):
        data[f"agent_allowances-{index}-id"] = ""
        data[f"agent_allowances-{index}-tool"] = str(tool.pk) if tool else ""
        data[f"agent_allowances-{index}-agent"] = str(agent.pk)
    return data


def tool_form(tool: Tool | None = None, tenant=None, **overrides) -> dict:
    data = {
        "name": "crm.read",
        "description": "Read a customer's CRM record",
        "is_active": True,
        "risk_tier": RiskTier.LOW,
        "writes": False,
        "reversible": True,
        "external_facing": False,
        "argument_schema": json.dumps({"type": "object", "properties": {}, "additionalProperties": False}),
        "amount_field": "",
        "connector": ConnectorKind.BUILTIN,
        "builtin": "noop",
        "connection": "",
        "http_method": "GET",
        "path_template": "",
        "timeout_seconds": "10",
        "per_user_per_minute": "0",
        "per_minute": "0",
        "reason": "",
    }
    if tool is not None:
        data.update(
            name=tool.name,
            description=tool.description,
            is_active=tool.is_active,
            risk_tier=tool.risk_tier,
            writes=tool.writes,
            reversible=tool.reversible,
            external_facing=tool.external_facing,
            argument_schema=json.dumps(tool.argument_schema),
            amount_field=tool.amount_field,
            connector=tool.connector,
            builtin=tool.builtin,
            connection=str(tool.connection_id or ""),
            http_method=tool.http_method,
            path_template=tool.path_template,
            timeout_seconds=str(tool.timeout_seconds),
        )
    else:
        data["tenant"] = str(tenant.pk)
    data.update(overrides)
    return {key: ("on" if value is True else value) for key, value in data.items() if value is not False}


def test_tool_list_shows_risk_grants_and_use(client, tenant, security, orders):
    refund = http_tool(tenant, orders)
    ping = builtin_tool(tenant)
    grant(refund, "support_lead")
    grant(refund, "admin")
    revoked = grant(refund, "support_agent")
    services.revoke_grant(grant=revoked, by=security, reason="Too risky")
    used = call(tenant, refund)
    services.revoke_connection(connection=orders, by=security, reason="Rotating")
    response = logged_in(client, security).get(url("tool", "changelist"))
    rows = {row.name: row for row in response.context["cl"].result_list}
    assert (rows["refund.issue"].active_grant_count, rows["noop.ping"].active_grant_count) == (2, 0)
    assert (rows["refund.issue"].last_used_at, rows["noop.ping"].last_used_at) == (used.created_at, None)
    content = response.content.decode()
    assert "(revoked)" in content
    assert "High" in content
    assert ping.name in content


def test_tool_changelist_queries_do_not_grow_with_rows(client, tenant, security, orders):
    client = logged_in(client, security)

    def measure() -> tuple[int, int]:
        with CaptureQueriesContext(db_connection) as queries:
            response = client.get(url("tool", "changelist"))
        return len(response.context["cl"].result_list), len(queries)

    def add(first: int, last: int) -> None:
        for number in range(first, last):
            made = http_tool(tenant, orders, name=f"refund.issue_{number}")
            grant(made, "support_lead")
            call(tenant, made)

    add(0, 2)
    few_rows, few_queries = measure()
    add(2, 12)
    many_rows, many_queries = measure()
    assert (few_rows, many_rows) == (2, 12)
    assert few_queries == many_queries


def test_adding_a_tool_validates_the_schema_and_goes_through_the_service(client, tenant, security):
    client = logged_in(client, security)
    bad = client.post(
        url("tool", "add"), {**tool_form(tenant=tenant, argument_schema='{"type": "string"}'), **inline_rows()}
    )
    assert bad.status_code == 200
    assert "argument_schema" in bad.context["adminform"].form.errors
    assert not Tool.objects.exists()

    response = client.post(url("tool", "add"), {**tool_form(tenant=tenant), **inline_rows()})
    assert response.status_code == 302, response.context["adminform"].form.errors
    made = Tool.objects.get(name="crm.read")
    assert made.history.first().history_user == security
    (event,) = chained(event_type="config.changed", reason="tools.tool_created")
    assert event.data["payload"]["tool"]["name"] == "crm.read"


def test_raising_a_tools_risk_tier_is_audited_with_the_diff(client, tenant, security):
    tool = builtin_tool(tenant)
    response = logged_in(client, security).post(
        url("tool", "change", tool.pk),
        {**tool_form(tool, risk_tier=RiskTier.HIGH, reason="Touches money now"), **inline_rows(tool)},
    )
    assert response.status_code == 302
    tool.refresh_from_db()
    assert tool.risk_tier == RiskTier.HIGH
    (event,) = chained(event_type="config.changed", reason="tools.tool_changed")
    assert event.data["payload"]["changes"] == {"risk_tier": ["low", "high"]}
    assert event.data["payload"]["why"] == "Touches money now"


def test_allowlist_is_managed_from_the_tool_page_through_the_services(client, tenant, security, agent):
    tool = builtin_tool(tenant)
    client = logged_in(client, security)
    response = client.post(url("tool", "change", tool.pk), {**tool_form(tool), **inline_rows(tool, new_agents=[agent])})
    assert response.status_code == 302
    allowance = AgentTool.objects.get(agent=agent, tool=tool)
    assert allowance.added_by == security
    assert chained(event_type="config.changed", reason="tools.agent_tool_allowed").count() == 1
    page = client.get(url("tool", "change", tool.pk)).content.decode()
    assert agent.name in page

    # Taking it off needs a reason: refused on the form, the allowance stays.
    refused = client.post(url("tool", "change", tool.pk), {**tool_form(tool), **inline_rows(tool, [(allowance, True)])})
    assert refused.status_code == 200
    assert "Say why the tool is taken off the agent" in refused.content.decode()
    assert AgentTool.objects.filter(pk=allowance.pk).exists()

    response = client.post(
        url("tool", "change", tool.pk),
        {**tool_form(tool, reason="Agent no longer does refunds"), **inline_rows(tool, [(allowance, True)])},
    )
    assert response.status_code == 302
    assert not AgentTool.objects.filter(pk=allowance.pk).exists()
    (event,) = chained(event_type="config.changed", reason="tools.agent_tool_removed")
    assert event.data["payload"]["why"] == "Agent no longer does refunds"


def test_a_refused_allowlist_change_rolls_back_the_tool_change_too(client, tenant, security, agent):
    tool = builtin_tool(tenant)
    allowance = AgentTool.objects.create(agent=agent, tool=tool)
    response = logged_in(client, security).post(
        url("tool", "change", tool.pk),
        {**tool_form(tool, risk_tier=RiskTier.MEDIUM), **inline_rows(tool, [(allowance, True)])},
    )
    assert response.status_code == 200
    tool.refresh_from_db()
    assert tool.risk_tier == RiskTier.LOW
    assert not chained(event_type="config.changed").exists()


def test_another_tenants_agent_cannot_be_allowlisted(client, tenant, security, other_agent):
    tool = builtin_tool(tenant)
    response = logged_in(client, security).post(
        url("tool", "change", tool.pk), {**tool_form(tool), **inline_rows(tool, new_agents=[other_agent])}
    )
    assert response.status_code == 200
    assert not AgentTool.objects.exists()


def test_tool_page_lists_its_grants_with_links(client, tenant, security):
    tool = builtin_tool(tenant)
    made = grant(tool, "support_lead", max_amount=None, daily_limit_per_user=20)
    page = logged_in(client, security).get(url("tool", "change", tool.pk)).content.decode()
    assert url("grant", "change", made.pk) in page
    assert "20 calls per person per day" in page
    assert f"{url('grant', 'add')}?tool={tool.pk}" in page


def test_another_tenants_security_cannot_open_or_change_acmes_tool(client, tenant, globex_security):
    tool = builtin_tool(tenant)
    client = logged_in(client, globex_security)
    assert client.get(url("tool", "change", tool.pk)).status_code == 302
    client.post(url("tool", "change", tool.pk), {**tool_form(tool, risk_tier=RiskTier.CRITICAL), **inline_rows(tool)})
    tool.refresh_from_db()
    assert tool.risk_tier == RiskTier.LOW


# --- Grants -------------------------------------------------------------------------------------


def grant_form(role, tool, **overrides) -> dict:
    data = {
        "role": str(role.pk),
        "tool": str(tool.pk),
        "effect": Effect.ALLOW,
        "max_amount": "",
        "daily_limit_per_user": "",
        "note": "Leads handle refunds",
        "reason": "",
    }
    data.update(overrides)
    return data


def test_creating_a_grant_goes_through_the_service(client, tenant, security, orders):
    tool = http_tool(tenant, orders)
    lead = Role.objects.get(tenant=tenant, kind="support_lead")
    response = logged_in(client, security).post(
        url("grant", "add"), grant_form(lead, tool, max_amount="100", allowed_channels=["web_chat"])
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    made = Grant.objects.get()
    assert (made.tenant, made.created_by, made.max_amount, made.allowed_channels) == (
        tenant,
        security,
        100,
        ["web_chat"],
    )
    (event,) = chained(event_type="config.changed", reason="tools.grant_created")
    assert event.data["payload"]["grant"]["role"] == lead.name


def test_a_second_active_grant_for_the_same_role_and_tool_is_a_form_error(client, tenant, security, orders):
    tool = http_tool(tenant, orders)
    grant(tool, "support_lead")
    lead = Role.objects.get(tenant=tenant, kind="support_lead")
    response = logged_in(client, security).post(url("grant", "add"), grant_form(lead, tool))
    assert response.status_code == 200
    assert "already holds a grant" in response.content.decode()
    assert Grant.objects.count() == 1


def test_a_role_of_another_tenant_cannot_be_granted_a_tool(client, tenant, other_tenant, superuser, orders):
    tool = http_tool(tenant, orders)
    theirs = Role.objects.get(tenant=other_tenant, kind="support_lead")
    response = logged_in(client, superuser).post(url("grant", "add"), grant_form(theirs, tool))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["role"] == ["Pick a role of this grant's tenant."]
    assert not Grant.objects.exists()


def test_changing_conditions_goes_through_the_service(client, tenant, security, orders):
    made = grant(http_tool(tenant, orders), "support_lead", max_amount=100)
    response = logged_in(client, security).post(
        url("grant", "change", made.pk),
        {"effect": Effect.ALLOW, "max_amount": "250", "daily_limit_per_user": "", "reason": "Peak season"},
    )
    assert response.status_code == 302
    made.refresh_from_db()
    assert made.max_amount == 250
    (event,) = chained(event_type="config.changed", reason="tools.grant_changed")
    assert event.data["payload"]["changes"] == {"max_amount": ["100.00", "250.00"]}


def test_revoked_grants_are_read_only(client, tenant, security, orders):
    made = grant(http_tool(tenant, orders), "support_lead")
    services.revoke_grant(grant=made, by=security, reason="Not needed")
    client = logged_in(client, security)
    page = client.get(url("grant", "change", made.pk))
    assert page.status_code == 200
    assert url("grant", "revoke", made.pk) not in page.content.decode()
    response = client.post(url("grant", "change", made.pk), {"effect": Effect.DENY})
    assert response.status_code == 403
    made.refresh_from_db()
    assert made.effect == Effect.ALLOW


def test_bulk_revoke_of_grants_needs_a_reason(client, tenant, security, orders):
    tool = http_tool(tenant, orders)
    first, second = grant(tool, "support_lead"), grant(tool, "admin")
    client = logged_in(client, security)
    selected = {"action": "revoke_selected", ACTION_CHECKBOX_NAME: [first.pk, second.pk], "apply": "1"}
    refused = client.post(url("grant", "changelist"), {**selected, "reason": ""})
    assert refused.status_code == 200
    assert "This field is required" in refused.content.decode()
    assert Grant.objects.active().count() == 2

    done = client.post(url("grant", "changelist"), {**selected, "reason": "Quarterly review"})
    assert done.status_code == 302
    assert not Grant.objects.active().exists()
    assert set(Grant.objects.values_list("revoke_reason", flat=True)) == {"Quarterly review"}
    assert chained(event_type="config.changed", reason="tools.grant_revoked").count() == 2


def test_grant_list_filters_and_links_to_the_usage_report(client, tenant, security, orders):
    tool = http_tool(tenant, orders)
    keep = grant(tool, "support_lead")
    gone = grant(tool, "admin")
    services.revoke_grant(grant=gone, by=security, reason="x")
    client = logged_in(client, security)
    response = client.get(url("grant", "changelist"))
    assert url("grant", "usage") in response.content.decode()

    def listed(**params) -> set[int]:
        return {row.pk for row in client.get(url("grant", "changelist"), params).context["cl"].result_list}

    assert listed(state="active") == {keep.pk}
    assert listed(state="revoked") == {gone.pk}
    assert listed(tool__risk_tier__exact="high") == {keep.pk, gone.pk}
    assert listed(tool__risk_tier__exact="low") == set()


def test_grant_changelist_queries_do_not_grow_with_rows(client, tenant, security, orders):
    client = logged_in(client, security)

    def measure() -> tuple[int, int]:
        with CaptureQueriesContext(db_connection) as queries:
            response = client.get(url("grant", "changelist"))
        return len(response.context["cl"].result_list), len(queries)

    grant(http_tool(tenant, orders, name="refund.issue_0"), "support_lead")
    few_rows, few_queries = measure()
    for number in range(1, 8):
        tool = http_tool(tenant, orders, name=f"refund.issue_{number}")
        grant(tool, "support_lead", max_amount=50, allowed_channels=["email"])
        grant(tool, "admin")
    many_rows, many_queries = measure()
    assert (few_rows, many_rows) == (1, 15)
    assert few_queries == many_queries


def test_another_tenants_security_cannot_see_or_revoke_acmes_grants(client, tenant, globex_security, orders):
    made = grant(http_tool(tenant, orders), "support_lead")
    client = logged_in(client, globex_security)
    assert client.get(url("grant", "changelist")).context["cl"].result_count == 0
    assert client.get(url("grant", "change", made.pk)).status_code == 302
    assert client.post(url("grant", "revoke", made.pk), {"reason": "x"}).status_code == 404
    client.post(
        url("grant", "changelist"),
        {"action": "revoke_selected", ACTION_CHECKBOX_NAME: [made.pk], "apply": "1", "reason": "x"},
    )
    made.refresh_from_db()
    assert made.is_active


# --- Tool calls ---------------------------------------------------------------------------------


def test_tool_calls_are_read_only_and_never_show_pending_arguments(client, tenant, security, agent, people):
    tool = builtin_tool(tenant)
    made = call(
        tenant,
        tool,
        agent=agent,
        user=people["support_lead"],
        outcome=Outcome.NEEDS_APPROVAL,
        reason_code="risk_tier",
        reason="High-risk tools wait for a human.",
        arguments={"order_id": "A-1042", "customer_email": "[redacted]"},
        pending_arguments={"customer_email": "pending-PII-value@example.com"},
        latency_ms=12.5,
    )
    client = logged_in(client, security)
    listing = client.get(url("toolcall", "changelist"))
    assert listing.status_code == 200
    assert "13 ms" in listing.content.decode() or "12 ms" in listing.content.decode()
    page = client.get(url("toolcall", "change", made.pk))
    assert page.status_code == 200
    content = page.content.decode()
    assert "A-1042" in content
    assert "High-risk tools wait for a human." in content
    assert "pending-PII-value" not in content
    assert client.get(url("toolcall", "add")).status_code == 403
    assert client.post(url("toolcall", "change", made.pk), {"outcome": "executed"}).status_code == 403
    assert client.post(url("toolcall", "delete", made.pk), {"post": "yes"}).status_code == 403
    made.refresh_from_db()
    assert made.outcome == Outcome.NEEDS_APPROVAL


def test_tool_call_list_is_scoped_and_filterable(client, tenant, other_tenant, security, agent, other_agent):
    mine = call(tenant, builtin_tool(tenant), agent=agent)
    denied = call(tenant, None, agent=agent, tool_name="refund.issue", outcome=Outcome.DENIED)
    call(other_tenant, builtin_tool(other_tenant), agent=other_agent)
    client = logged_in(client, security)

    def listed(**params) -> set:
        return {row.pk for row in client.get(url("toolcall", "changelist"), params).context["cl"].result_list}

    assert listed() == {mine.pk, denied.pk}
    assert listed(outcome__exact="denied") == {denied.pk}
    assert "Globex" not in client.get(url("toolcall", "changelist")).content.decode()


def test_tool_call_changelist_queries_do_not_grow_with_rows(client, tenant, security, agent, people):
    tool = builtin_tool(tenant)
    client = logged_in(client, security)

    def measure() -> tuple[int, int]:
        with CaptureQueriesContext(db_connection) as queries:
            response = client.get(url("toolcall", "changelist"))
        return len(response.context["cl"].result_list), len(queries)

    call(tenant, tool, agent=agent, user=people["support_lead"])
    few_rows, few_queries = measure()
    other_agent = AgentFactory(tenant=tenant, name="Second")
    for _ in range(10):
        call(tenant, tool, agent=other_agent, user=people["admin"], outcome=Outcome.DENIED)
    many_rows, many_queries = measure()
    assert (few_rows, many_rows) == (1, 11)
    assert few_queries == many_queries


# --- Allowlists across agents -------------------------------------------------------------------


def test_allowlist_list_takes_tools_off_with_a_reason(client, tenant, security, agent, other_agent):
    tool = builtin_tool(tenant)
    allow(agent, tool)
    allow(other_agent, builtin_tool(other_agent.tenant))
    client = logged_in(client, security)
    response = client.get(url("agenttool", "changelist"))
    assert [row.agent for row in response.context["cl"].result_list] == [agent]
    allowance = AgentTool.objects.get(agent=agent)
    done = client.post(
        url("agenttool", "changelist"),
        {"action": "disallow_selected", ACTION_CHECKBOX_NAME: [allowance.pk], "apply": "1", "reason": "Retired use"},
    )
    assert done.status_code == 302
    assert not AgentTool.objects.filter(agent=agent).exists()
    assert chained(event_type="config.changed", reason="tools.agent_tool_removed").count() == 1
