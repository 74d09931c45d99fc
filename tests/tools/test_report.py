"""The "permissions granted vs used" report: grants idle for N days stand out with a one-click
revoke (audited like any revocation), each agent's allowlisted tools show when it last ran
them, calls outside an allowlist are flagged, and the page costs the same number of queries
however many roles, grants and agents there are."""

import datetime
import uuid

import pytest
from django.contrib.messages import get_messages
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import Role
from apps.tools import selectors
from apps.tools.choices import Outcome
from apps.tools.models import Grant, ToolCall

from ..accounts.factories import member
from ..agents.factories import AgentFactory
from ..audit.helpers import chained
from .factories import allow, builtin_tool, grant

pytestmark = pytest.mark.django_db

REPORT = reverse("admin:tools_grant_usage")


def revoke_url(made: Grant) -> str:
    return reverse("admin:tools_grant_revoke", args=[made.pk])


def days_ago(days: int) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(days=days)


def backdate(made: Grant, *, created: int, used: int | None = None) -> Grant:
    Grant.objects.filter(pk=made.pk).update(
        created_at=days_ago(created), last_used_at=None if used is None else days_ago(used)
    )
    made.refresh_from_db()
    return made


def call(agent, tool_name: str, *, tool=None, outcome=Outcome.EXECUTED, reason_code="", at=None) -> ToolCall:
    made = ToolCall.objects.create(
        idempotency_key=str(uuid.uuid4()),
        tenant=agent.tenant,
        agent=agent,
        tool=tool,
        tool_name=tool_name,
        action_digest="0" * 64,
        outcome=outcome,
        reason_code=reason_code,
    )
    if at is not None:
        ToolCall.objects.filter(pk=made.pk).update(created_at=at)
        made.refresh_from_db()
    return made


def logged_in(client, user):
    client.force_login(user)
    return client


def uses_by_grant(response) -> dict[int, selectors.GrantUse]:
    report = response.context["report"]
    return {use.grant.pk: use for tenant in report.tenants for role in tenant.roles for use in role.grants}


@pytest.fixture
def security(people):
    return people["security"]


def test_old_unused_grants_are_highlighted_with_a_one_click_revoke(client, tenant, security):
    lookup, refund, ping = (
        builtin_tool(tenant, "order.lookup"),
        builtin_tool(tenant, "refund.issue"),
        builtin_tool(tenant),
    )
    stale = backdate(grant(lookup, "support_agent"), created=90, used=45)
    never_used = backdate(grant(refund, "support_lead"), created=40)
    in_use = backdate(grant(lookup, "support_lead"), created=90, used=1)
    new = backdate(grant(ping, "admin"), created=3)
    response = logged_in(client, security).get(REPORT)
    assert response.status_code == 200
    uses = uses_by_grant(response)
    assert {pk for pk, use in uses.items() if use.unused} == {stale.pk, never_used.pk}
    assert (uses[stale.pk].days_unused, uses[never_used.pk].days_unused, uses[in_use.pk].days_unused) == (45, 40, 1)
    assert uses[new.pk].days_unused == 3
    content = response.content.decode()
    for flagged in (stale, never_used):
        assert f'action="{revoke_url(flagged)}"' in content
    for fine in (in_use, new):
        assert f'action="{revoke_url(fine)}"' not in content
    assert 'value="Unused for 30 days"' in content
    assert "csrfmiddlewaretoken" in content


def test_the_number_of_days_is_a_query_parameter(client, tenant, security):
    made = backdate(grant(builtin_tool(tenant), "support_lead"), created=20, used=10)
    client = logged_in(client, security)
    assert not uses_by_grant(client.get(REPORT))[made.pk].unused
    response = client.get(REPORT, {"days": "7"})
    assert uses_by_grant(response)[made.pk].unused
    assert 'value="Unused for 7 days"' in response.content.decode()
    assert client.get(REPORT, {"days": "nonsense"}).context["days"] == selectors.UNUSED_AFTER_DAYS


def test_one_click_revoke_revokes_and_lands_in_the_audit_trail(client, tenant, security):
    made = backdate(grant(builtin_tool(tenant), "support_agent"), created=90)
    client = logged_in(client, security)
    back = f"{REPORT}?days=30"
    response = client.post(revoke_url(made), {"reason": "Unused for 30 days", "next": back})
    assert response.status_code == 302
    assert response.url == back
    made.refresh_from_db()
    assert (made.is_active, made.revoked_by, made.revoke_reason) == (False, security, "Unused for 30 days")
    (event,) = chained(event_type="config.changed", reason="tools.grant_revoked")
    assert event.tenant_id == tenant.pk
    assert event.actor_name == security.username
    assert event.data["payload"]["why"] == "Unused for 30 days"
    assert event.data["payload"]["grant"]["id"] == made.pk
    assert made.pk not in uses_by_grant(client.get(REPORT))  # only active grants are listed


def test_revoke_never_redirects_off_site(client, tenant, security):
    made = backdate(grant(builtin_tool(tenant), "support_agent"), created=90)
    response = logged_in(client, security).post(revoke_url(made), {"reason": "Unused", "next": "https://evil.example/"})
    assert response.status_code == 302
    assert response.url == reverse("admin:tools_grant_change", args=[made.pk])


def test_revoke_without_a_reason_is_refused_with_a_clear_message(client, tenant, security):
    made = backdate(grant(builtin_tool(tenant), "support_agent"), created=90)
    response = logged_in(client, security).post(revoke_url(made), {"reason": "   ", "next": REPORT})
    assert response.status_code == 200
    assert "Say why the grant is revoked" in response.content.decode()
    made.refresh_from_db()
    assert made.is_active
    assert not chained(event_type="config.changed").exists()


def test_one_click_revoke_is_csrf_protected(tenant, security):
    made = backdate(grant(builtin_tool(tenant), "support_agent"), created=90)
    client = Client(enforce_csrf_checks=True)
    client.force_login(security)
    assert client.post(revoke_url(made), {"reason": "Unused for 30 days"}).status_code == 403
    made.refresh_from_db()
    assert made.is_active


def test_a_refused_revoke_says_why_and_returns_to_the_report(client, tenant, security):
    made = backdate(grant(builtin_tool(tenant), "support_agent"), created=90)
    client = logged_in(client, security)
    client.post(revoke_url(made), {"reason": "first", "next": REPORT})
    again = client.post(revoke_url(made), {"reason": "second", "next": REPORT})
    assert again.status_code == 302
    assert any("already revoked" in str(message) for message in get_messages(again.wsgi_request))


def test_agents_allowlisted_tools_last_use_and_calls_outside_the_allowlist(client, tenant, security, agent):
    lookup, refund = builtin_tool(tenant, "order.lookup"), builtin_tool(tenant, "refund.issue")
    allow(agent, lookup, refund)
    other = AgentFactory(tenant=tenant, name="Billing Bot")
    allow(other, lookup)
    call(agent, "order.lookup", tool=lookup, at=days_ago(5))
    latest = call(agent, "order.lookup", tool=lookup, at=days_ago(2))
    call(agent, "order.lookup", tool=lookup, outcome=Outcome.DENIED)  # not an execution
    call(other, "order.lookup", tool=lookup, outcome=Outcome.PROPOSED)
    call(agent, "crm.export", reason_code="not_on_allowlist", outcome=Outcome.DENIED, at=days_ago(3))
    last_attempt = call(agent, "crm.export", reason_code="not_on_allowlist", outcome=Outcome.DENIED, at=days_ago(1))
    call(other, "refund.issue", tool=refund, reason_code="not_on_allowlist", outcome=Outcome.DENIED)

    response = logged_in(client, security).get(REPORT)
    (usage,) = response.context["report"].tenants
    agents = {entry.agent.name: entry for entry in usage.agents}
    assistant = {use.allowance.tool.name: use for use in agents["Support Assistant"].allowed}
    assert assistant["order.lookup"].last_executed_at == latest.created_at
    assert assistant["refund.issue"].never_used
    assert agents["Billing Bot"].allowed[0].never_used  # proposed in shadow is not executed
    assert [(row.tool_name, row.attempts, row.last_attempt_at) for row in agents["Support Assistant"].outside] == [
        ("crm.export", 2, last_attempt.created_at)
    ]
    assert [(row.tool_name, row.attempts) for row in agents["Billing Bot"].outside] == [("refund.issue", 1)]
    content = response.content.decode()
    assert "Allowlisted, never used" in content
    assert '<td class="flag">crm.export</td>' in content


def test_report_queries_do_not_grow_with_roles_grants_and_agents(client, tenant, security):
    client = logged_in(client, security)

    def measure() -> tuple[int, int]:
        with CaptureQueriesContext(db_connection) as queries:
            response = client.get(REPORT)
        assert response.status_code == 200
        report = response.context["report"]
        rows = sum(len(role.grants) for usage in report.tenants for role in usage.roles)
        rows += sum(len(entry.allowed) + len(entry.outside) for usage in report.tenants for entry in usage.agents)
        return rows, len(queries)

    def add(first: int, last: int) -> None:
        for number in range(first, last):
            tool = builtin_tool(tenant, f"noop.ping_{number}")
            for kind in ("support_agent", "support_lead", "admin"):
                backdate(grant(tool, kind), created=60, used=number or None)
            agent = AgentFactory(tenant=tenant, name=f"Agent {number}")
            allow(agent, tool)
            call(agent, tool.name, tool=tool)
            call(agent, f"secret.tool_{number}", reason_code="not_on_allowlist", outcome=Outcome.DENIED)

    add(0, 1)
    few_rows, few_queries = measure()
    add(1, 8)
    Role.objects.create(tenant=tenant, kind="support_agent", name="Night shift")
    many_rows, many_queries = measure()
    assert (few_rows, many_rows) == (5, 40)
    assert few_queries == many_queries


def test_report_shows_only_the_users_tenants(client, tenant, other_tenant, security, other_agent):
    mine = backdate(grant(builtin_tool(tenant), "support_agent"), created=90)
    theirs = backdate(grant(builtin_tool(other_tenant), "support_agent"), created=90)
    allow(other_agent, theirs.tool)
    response = logged_in(client, security).get(REPORT)
    assert set(uses_by_grant(response)) == {mine.pk}
    content = response.content.decode()
    assert other_tenant.name not in content
    assert other_agent.name not in content


def test_another_tenants_security_cannot_revoke_from_the_report(client, tenant, other_tenant):
    made = backdate(grant(builtin_tool(tenant), "support_agent"), created=90)
    outsider = member(other_tenant, "security", username="globex.security")
    response = logged_in(client, outsider).post(revoke_url(made), {"reason": "Unused for 30 days"})
    assert response.status_code == 404
    made.refresh_from_db()
    assert made.is_active


def test_compliance_reads_the_report_but_gets_no_revoke_button(client, tenant, people):
    made = backdate(grant(builtin_tool(tenant), "support_agent"), created=90)
    client = logged_in(client, people["compliance"])
    response = client.get(REPORT)
    assert response.status_code == 200
    assert uses_by_grant(response)[made.pk].unused
    assert f'action="{revoke_url(made)}"' not in response.content.decode()
    assert client.post(revoke_url(made), {"reason": "x"}).status_code == 403
    made.refresh_from_db()
    assert made.is_active


@pytest.mark.parametrize(("who", "status"), [("support_agent", 302), ("knowledge_owner", 403)])
def test_people_without_tools_access_cannot_open_the_report(client, people, who, status):
    assert logged_in(client, people[who]).get(REPORT).status_code == status


def test_grant_list_links_to_the_report(client, security):
    response = logged_in(client, security).get(reverse("admin:tools_grant_changelist"))
    assert REPORT in response.content.decode()
