"""The gateway's one read (apps/tools/facts.py) finds what the ORM finds, converted the
same way, on SQLite and on PostgreSQL (where it runs as a prepared statement)."""

from datetime import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.agents.services import may_start_turn, set_kill_switch
from apps.guardrails import services as guardrails
from apps.tools import facts
from apps.tools.choices import Effect
from apps.tools.models import Tool
from tests.accounts.factories import member
from tests.agents.factories import AgentFactory

from .factories import REFUND_SCHEMA, allow, builtin_tool, connection, grant, http_tool

pytestmark = pytest.mark.django_db


@pytest.fixture
def refund(tenant, people):
    linked = connection(tenant, people["security"], secret="s3cret-token")
    return http_tool(tenant, linked, per_user_per_minute=5)


def read(agent, user, tool_name, tool_id=None):
    return facts.read(agent.tenant_id, agent.pk, user.pk, tool_name, tool_id)


def test_the_tool_and_its_connection_are_what_the_orm_loads(agent, people, refund, django_assert_num_queries):
    allow(agent, refund)

    found = read(agent, people["support_agent"], "refund.issue")

    stored = Tool.objects.select_related("connection").get(pk=refund.pk)
    for field in Tool._meta.concrete_fields:
        assert getattr(found.tool, field.attname) == getattr(stored, field.attname), field.name
    assert found.tool.argument_schema == REFUND_SCHEMA
    assert isinstance(found.tool.updated_at, datetime) and timezone.is_aware(found.tool.updated_at)
    assert found.tool.on_allowlist is True
    with django_assert_num_queries(0):  # loaded with the tool, as select_related would
        linked = found.tool.connection
    assert (linked.pk, linked.status, linked.base_url) == (stored.connection.pk, "active", stored.connection.base_url)
    assert found.tool._state.adding is False


def test_grants_and_roles_are_those_of_the_acting_user_in_the_turns_tenant(agent, tenant, other_tenant, refund):
    person = member(tenant, "support_agent", username="two.roles")
    member(tenant, "support_lead", username="two.roles")
    member(other_tenant, "admin", username="two.roles")
    allow(agent, refund)
    made = grant(
        refund,
        "support_agent",
        max_amount=Decimal("49.95"),
        allowed_channels=["web_chat", "email"],
        daily_limit_per_user=3,
        requires_verified_subject=True,
    )
    made.last_used_at = timezone.now()
    made.save()
    revoked = grant(refund, "support_lead", Effect.REQUIRE_APPROVAL)
    revoked.revoked_at = timezone.now()
    revoked.save()
    other_tool = builtin_tool(tenant, "noop.other")
    grant(other_tool, "support_lead")

    found = read(agent, person, "refund.issue")

    assert sorted(kind for _id, kind, _name in found.roles) == ["support_agent", "support_lead"]
    [only] = found.grants  # the revoked grant and the other tool's grant are not there
    assert only["pk"] == made.pk and only["effect"] == Effect.ALLOW
    assert only["max_amount"] == Decimal("49.95") and isinstance(only["max_amount"], Decimal)
    assert only["allowed_channels"] == ["web_chat", "email"]
    assert only["daily_limit_per_user"] == 3 and only["requires_verified_subject"] is True
    assert only["last_used_at"] == made.last_used_at and timezone.is_aware(only["last_used_at"])
    assert only["role__name"] == made.role.name


def test_an_inactive_user_holds_no_role(agent, tenant, refund):
    person = member(tenant, "support_agent", username="gone", is_active=False)
    grant(refund, "support_agent")

    found = read(agent, person, "refund.issue")

    assert found.roles == [] and found.grants == []


def test_the_agent_facts_follow_may_start_turn(agent, people, refund, superuser):
    assert read(agent, people["support_agent"], "refund.issue").run == may_start_turn(agent.pk)

    set_kill_switch(engaged=True, by=superuser, reason="Incident 7", tenant=agent.tenant)
    tenant_killed = read(agent, people["support_agent"], "refund.issue").run
    assert tenant_killed == may_start_turn(agent.pk)
    set_kill_switch(engaged=True, by=superuser, reason="Everything off")
    both_killed = read(agent, people["support_agent"], "refund.issue").run
    assert both_killed == may_start_turn(agent.pk)

    assert not tenant_killed.allowed and "Incident 7" in tenant_killed.reason
    assert "global kill switch" in both_killed.reason and "Everything off" in both_killed.reason


def test_a_missing_agent_and_a_tool_outside_the_turns_tenant(agent, other_tenant, people, refund):
    missing = facts.read(agent.tenant_id, 999_999, people["support_agent"].pk, "refund.issue")
    builtin_tool(other_tenant, "noop.elsewhere")
    elsewhere = read(agent, people["support_agent"], "noop.elsewhere")
    foreign_agent = AgentFactory(tenant=other_tenant)
    # The agent belongs to another tenant than the turn's: no tool is looked up at all.
    crossed = facts.read(agent.tenant_id, foreign_agent.pk, people["support_agent"].pk, "refund.issue")

    assert not missing.run.allowed and missing.tool is None
    assert elsewhere.run.allowed and elsewhere.tool is None
    assert crossed.run.tenant_id == other_tenant.pk and crossed.tool is None


def test_a_tool_id_pins_the_very_tool(agent, people, refund):
    assert read(agent, people["support_agent"], "refund.issue", refund.pk).tool.pk == refund.pk
    assert read(agent, people["support_agent"], "refund.issue", refund.pk + 1000).tool is None


def test_the_active_guardrail_versions_are_found(agent, tenant, people, refund):
    scopes = ("global", f"tenant:{tenant.pk}", f"agent:{agent.pk}")
    assert read(agent, people["support_agent"], "refund.issue").policy_documents == tuple((s, None) for s in scopes)
    policy = guardrails.save_policy(
        document="rate_limits:\n  per_tool_per_user_per_day:\n    refund.issue: 7\n",
        by=people["security"],
        tenant=tenant,
    )
    guardrails.activate_policy(policy=policy, by=people["security"])

    found = read(agent, people["support_agent"], "refund.issue")

    assert found.policy_documents == tuple(zip(scopes, (None, policy.document, None), strict=True))
    compiled = guardrails.effective_policy_of(found.policy_documents)
    assert compiled.rate_limits["per_tool_per_user_per_day"]["refund.issue"] == 7
    assert compiled == guardrails.effective_policy(tenant.pk, agent.pk)
