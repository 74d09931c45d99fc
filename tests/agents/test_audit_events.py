"""Governance changes to the agent inventory land in the audit chain, with who, their roles
at the time, why, and the diff; refused changes leave no event."""

import pytest
from django.core.exceptions import PermissionDenied

from apps.agents import services
from apps.agents.choices import RolloutMode
from apps.audit.chain import verify_chain

from ..audit.helpers import chained

pytestmark = pytest.mark.django_db


def test_suspending_an_agent_records_who_why_and_the_status_change(agent, people):
    lead = people["support_lead"]
    services.suspend_agent(agent=agent, by=lead, reason="Quoting a withdrawn refund policy")

    (event,) = chained(event_type="agent.suspended")
    data = event.data
    assert (event.tenant_id, event.agent_id, event.actor_name) == (agent.tenant_id, agent.pk, lead.username)
    assert data["actor_roles"] == ["support_lead"]
    assert (data["agent_name"], data["tenant_name"]) == (agent.slug, agent.tenant.slug)
    assert data["payload"] == {
        "changes": {"status": ["active", "suspended"]},
        "why": "Quoting a withdrawn refund policy",
    }
    assert verify_chain().ok


def test_rollout_mode_change_is_a_config_change_with_the_diff(agent, people):
    services.update_agent(
        agent=agent, by=people["agent_owner"], rollout_mode=RolloutMode.SUGGEST, reason="Too many overrides"
    )

    (event,) = chained(event_type="config.changed", reason="agent.rollout_mode")
    assert event.data["payload"]["changes"] == {"rollout_mode": ["assist", "suggest"]}
    assert event.data["payload"]["why"] == "Too many overrides"


def test_an_edit_that_changes_nothing_records_nothing(agent, people):
    services.update_agent(agent=agent, by=people["agent_owner"], purpose=agent.purpose)
    assert not chained(event_type="config.changed").exists()


def test_kill_switch_engagement_is_recorded_for_the_tenant(tenant, people):
    services.set_kill_switch(engaged=True, by=people["security"], reason="Prompt injection wave", tenant=tenant)

    (event,) = chained(reason="kill_switch.tenant")
    assert event.tenant_id == tenant.pk
    assert event.data["payload"]["changes"] == {"engaged": [False, True]}


def test_global_kill_switch_is_a_platform_event_without_tenant(superuser):
    services.set_kill_switch(engaged=True, by=superuser, reason="Provider incident")

    (event,) = chained(reason="kill_switch.global")
    assert event.tenant_id is None
    assert event.actor_name == superuser.username


def test_a_refused_change_leaves_no_event(agent, people):
    with pytest.raises(PermissionDenied):
        services.suspend_agent(agent=agent, by=people["knowledge_owner"], reason="not mine to stop")
    assert not chained().exists()


def test_prompt_publication_and_approval_are_recorded(agent, people):
    version = services.publish_prompt(agent=agent, text="You are careful.", author=people["agent_owner"])
    services.approve_prompt(version=version, approver=people["admin"])

    kinds = list(chained(event_type="config.changed").values_list("reason", flat=True))
    assert kinds == ["agent.prompt_published", "agent.prompt_approved"]
