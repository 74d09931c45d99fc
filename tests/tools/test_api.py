"""/api/v1/tools/, /connections/, /tool-grants/ and /tool-calls/: read-only, scoped to the
tenants where the caller may view each kind of row, never a secret or a call's pending
arguments; and POST /tool-grants/<id>/revoke/ through the same service as the admin."""

import uuid

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from apps.tools.choices import Outcome
from apps.tools.models import Grant, ToolCall

from ..accounts.factories import member
from ..agents.factories import AgentFactory
from ..audit.helpers import chained
from .factories import builtin_tool, connection, grant, http_tool

pytestmark = pytest.mark.django_db

SECRET = "sk-test-SECRET-value-123456"
ENV_SECRET = "env-SECRET-value-987654"
TOOLS, CONNECTIONS, GRANTS, CALLS = (
    "/api/v1/tools/",
    "/api/v1/connections/",
    "/api/v1/tool-grants/",
    "/api/v1/tool-calls/",
)


def revoke_url(made: Grant) -> str:
    return f"{GRANTS}{made.pk}/revoke/"


def results(response) -> list[dict]:
    assert response.status_code == 200, response.content
    return response.json()["results"]


def as_user(api_client, user):
    api_client.force_login(user)
    return api_client


def call(agent, tool=None, **fields) -> ToolCall:
    return ToolCall.objects.create(
        idempotency_key=str(uuid.uuid4()),
        tenant=agent.tenant,
        agent=agent,
        tool=tool,
        tool_name=fields.pop("tool_name", tool.name if tool else "unknown.tool"),
        action_digest="0" * 64,
        outcome=fields.pop("outcome", Outcome.EXECUTED),
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


@pytest.fixture
def refund(tenant, orders):
    return http_tool(tenant, orders)


# --- Who may read -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("get", TOOLS), ("get", CONNECTIONS), ("get", GRANTS), ("get", CALLS), ("post", "revoke")]
)
def test_anonymous_requests_are_refused(api_client, refund, method, path):
    made = grant(refund, "support_lead")
    target = revoke_url(made) if path == "revoke" else path
    response = getattr(api_client, method)(target, {"reason": "x"}, format="json")
    assert response.status_code in (401, 403)
    made.refresh_from_db()
    assert made.is_active


@pytest.mark.parametrize("path", [TOOLS, CONNECTIONS, GRANTS, CALLS])
def test_people_without_tools_view_permission_see_nothing(api_client, refund, agent, people, path):
    grant(refund, "support_lead")
    call(agent, refund)
    assert results(as_user(api_client, people["knowledge_owner"]).get(path)) == []


@pytest.mark.parametrize("path", [TOOLS, CONNECTIONS, GRANTS, CALLS])
def test_another_tenants_security_sees_none_of_acmes_rows(api_client, refund, agent, globex_security, path):
    made = grant(refund, "support_lead")
    made_call = call(agent, refund)
    client = as_user(api_client, globex_security)
    assert results(client.get(path)) == []
    row_id = {TOOLS: refund.pk, CONNECTIONS: refund.connection_id, GRANTS: made.pk, CALLS: made_call.pk}[path]
    assert client.get(f"{path}{row_id}/").status_code == 404


def test_compliance_reads_every_tools_endpoint(api_client, refund, agent, people):
    grant(refund, "support_lead")
    call(agent, refund)
    client = as_user(api_client, people["compliance"])
    for path in (TOOLS, CONNECTIONS, GRANTS, CALLS):
        assert len(results(client.get(path))) == 1, path


def test_the_endpoints_are_read_only(api_client, refund, security):
    client = as_user(api_client, security)
    assert client.post(TOOLS, {"name": "x.y"}, format="json").status_code == 405
    assert client.patch(f"{TOOLS}{refund.pk}/", {"risk_tier": "low"}, format="json").status_code == 405
    assert client.delete(f"{CONNECTIONS}{refund.connection_id}/").status_code == 405
    assert client.post(GRANTS, {}, format="json").status_code == 405


# --- Tools --------------------------------------------------------------------------------------


def test_tools_carry_their_definition_and_connection(api_client, tenant, refund, security):
    builtin_tool(tenant)
    rows = {row["name"]: row for row in results(as_user(api_client, security).get(TOOLS))}
    row = rows["refund.issue"]
    assert row["tenant"] == "acme"
    assert row["argument_schema"]["required"] == ["order_id", "amount"]
    assert (row["risk_tier"], row["writes"], row["reversible"], row["external_facing"]) == ("high", True, False, False)
    assert (row["connection"], row["connection_status"]) == ("sandbox-orders", "active")
    assert (rows["noop.ping"]["connection"], rows["noop.ping"]["connection_status"]) == (None, None)


def test_tools_filter_by_tier_and_activity(api_client, tenant, refund, security):
    builtin_tool(tenant, is_active=False)
    client = as_user(api_client, security)
    assert [row["name"] for row in results(client.get(TOOLS, {"risk_tier": "high"}))] == ["refund.issue"]
    assert [row["name"] for row in results(client.get(TOOLS, {"active": "false"}))] == ["noop.ping"]


# --- Connections --------------------------------------------------------------------------------


def test_connections_never_carry_a_secret(api_client, tenant, security, orders, monkeypatch):
    monkeypatch.setenv("CRM_TOKEN", ENV_SECRET)
    connection(tenant, security, name="crm", system="CRM", env_var="CRM_TOKEN")
    connection(tenant, security, name="public", system="Status page", auth_kind="none")
    client = as_user(api_client, security)
    listing = client.get(CONNECTIONS)
    detail = client.get(f"{CONNECTIONS}{orders.pk}/")
    for response in (listing, detail, client.get(CONNECTIONS, format="api")):
        assert SECRET.encode() not in response.content
        assert ENV_SECRET.encode() not in response.content
        assert orders.secret_ciphertext.encode() not in response.content
    locations = {row["name"]: row["secret_location"] for row in results(listing)}
    assert locations == {
        "sandbox-orders": "encrypted value",
        "crm": "environment variable CRM_TOKEN",
        "public": "none",
    }
    assert "secret_ciphertext" not in detail.json()
    assert "secret_env_var" not in detail.json()


# --- Grants -------------------------------------------------------------------------------------


def test_grants_show_role_tool_effect_conditions_and_use(api_client, refund, security):
    made = grant(refund, "support_lead", max_amount=100, allowed_channels=["web_chat"])
    gone = grant(refund, "admin")
    gone.revoked_at = gone.created_at
    gone.save()
    client = as_user(api_client, security)
    rows = {row["id"]: row for row in results(client.get(GRANTS))}
    row = rows[made.pk]
    assert (row["role"], row["role_kind"], row["tool"], row["effect"]) == (
        "Support lead",
        "support_lead",
        "refund.issue",
        "allow",
    )
    assert (row["max_amount"], row["allowed_channels"], row["last_used_at"], row["revoked"]) == (
        "100.00",
        ["web_chat"],
        None,
        False,
    )
    assert rows[gone.pk]["revoked"] is True
    assert [row["id"] for row in results(client.get(GRANTS, {"revoked": "false"}))] == [made.pk]
    assert [row["id"] for row in results(client.get(GRANTS, {"revoked": "true"}))] == [gone.pk]


def test_security_revokes_a_grant_with_a_reason(api_client, refund, security):
    made = grant(refund, "support_lead")
    response = as_user(api_client, security).post(revoke_url(made), {"reason": "Unused for 90 days"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["revoked"] is True
    assert response.json()["revoke_reason"] == "Unused for 90 days"
    made.refresh_from_db()
    assert (made.is_active, made.revoked_by) == (False, security)
    (event,) = chained(event_type="config.changed", reason="tools.grant_revoked")
    assert event.data["payload"]["why"] == "Unused for 90 days"


@pytest.mark.parametrize("payload", [{}, {"reason": ""}, {"reason": "   "}])
def test_revoking_without_a_reason_is_a_bad_request(api_client, refund, security, payload):
    made = grant(refund, "support_lead")
    response = as_user(api_client, security).post(revoke_url(made), payload, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()
    made.refresh_from_db()
    assert made.is_active


def test_revoking_needs_permission_to_change_grants(api_client, refund, people):
    made = grant(refund, "support_lead")
    response = as_user(api_client, people["compliance"]).post(revoke_url(made), {"reason": "x"}, format="json")
    assert response.status_code == 403
    made.refresh_from_db()
    assert made.is_active
    assert not chained(event_type="config.changed").exists()


def test_another_tenants_security_cannot_revoke(api_client, refund, globex_security):
    made = grant(refund, "support_lead")
    response = as_user(api_client, globex_security).post(revoke_url(made), {"reason": "x"}, format="json")
    assert response.status_code == 404
    made.refresh_from_db()
    assert made.is_active


def test_revoking_twice_is_a_bad_request(api_client, refund, security):
    made = grant(refund, "support_lead")
    client = as_user(api_client, security)
    client.post(revoke_url(made), {"reason": "first"}, format="json")
    response = client.post(revoke_url(made), {"reason": "second"}, format="json")
    assert response.status_code == 400
    assert "already revoked" in str(response.json())


# --- Tool calls ---------------------------------------------------------------------------------


def test_tool_calls_carry_redacted_arguments_and_never_pending_ones(api_client, refund, agent, security):
    made = call(
        agent,
        refund,
        outcome=Outcome.NEEDS_APPROVAL,
        reason_code="risk_tier",
        reason="High-risk tools wait for a human.",
        arguments={"order_id": "A-1042", "amount": 89, "customer_email": "[redacted]"},
        pending_arguments={"customer_email": "pending-PII-value@example.com"},
        result=None,
    )
    client = as_user(api_client, security)
    listing = client.get(CALLS)
    detail = client.get(f"{CALLS}{made.pk}/")
    for response in (listing, detail):
        assert response.status_code == 200
        assert b"pending-PII-value" not in response.content
        assert b"pending_arguments" not in response.content
    row = detail.json()
    assert row["arguments"] == {"order_id": "A-1042", "amount": 89, "customer_email": "[redacted]"}
    assert (row["tool"], row["agent"], row["outcome"], row["reason_code"]) == (
        "refund.issue",
        agent.slug,
        "needs_approval",
        "risk_tier",
    )
    assert row["reason"] == "High-risk tools wait for a human."


def test_tool_calls_filter_by_agent_tool_and_outcome(api_client, tenant, refund, agent, security):
    other = AgentFactory(tenant=tenant, name="Billing Bot", slug="billing-bot")
    ping = builtin_tool(tenant)
    refunded = call(agent, refund)
    pinged = call(agent, ping, outcome=Outcome.DENIED, reason_code="not_on_allowlist")
    theirs = call(other, ping)
    client = as_user(api_client, security)

    def ids(**params) -> set[str]:
        return {row["id"] for row in results(client.get(CALLS, params))}

    assert ids() == {str(refunded.pk), str(pinged.pk), str(theirs.pk)}
    assert ids(agent=agent.slug) == {str(refunded.pk), str(pinged.pk)}
    assert ids(tool="noop.ping") == {str(pinged.pk), str(theirs.pk)}
    assert ids(outcome="denied") == {str(pinged.pk)}
    assert ids(agent="billing-bot", outcome="executed") == {str(theirs.pk)}


def test_tool_calls_are_paginated_newest_first(api_client, refund, agent, security):
    made = [call(agent, refund) for _ in range(5)]
    body = as_user(api_client, security).get(CALLS, {"limit": 2}).json()
    assert body["count"] == 5
    assert len(body["results"]) == 2
    assert body["next"]
    assert body["results"][0]["id"] == str(made[-1].pk)


@pytest.mark.parametrize("path", [TOOLS, CONNECTIONS, GRANTS, CALLS])
def test_list_queries_do_not_grow_with_rows(api_client, tenant, security, agent, path):
    client = as_user(api_client, security)

    def add(first: int, last: int) -> None:
        for number in range(first, last):
            made = connection(tenant, security, name=f"system-{number}", secret=SECRET)
            tool = http_tool(tenant, made, name=f"refund.issue_{number}")
            grant(tool, "support_lead")
            call(agent, tool, user=security)

    def measure() -> tuple[int, int]:
        with CaptureQueriesContext(db_connection) as queries:
            rows = results(client.get(path))
        return len(rows), len(queries)

    add(0, 1)
    few_rows, few_queries = measure()
    add(1, 10)
    many_rows, many_queries = measure()
    assert (few_rows, many_rows) == (1, 10)
    assert few_queries == many_queries


def test_openapi_schema_lists_the_tools_endpoints(api_client):
    paths = api_client.get("/api/schema/", {"format": "json"}).json()["paths"]
    for path in (TOOLS, CONNECTIONS, GRANTS, CALLS, GRANTS + "{id}/revoke/"):
        assert path in paths
    assert "post" in paths[GRANTS + "{id}/revoke/"]
    assert "post" not in paths[TOOLS]
