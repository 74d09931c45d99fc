import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from apps.agents import services
from apps.agents.choices import AgentStatus
from apps.agents.models import Agent, KillSwitch, PromptVersion

from .factories import AgentFactory

pytestmark = pytest.mark.django_db


def test_agent_without_owner_cannot_be_created(tenant, people):
    with pytest.raises(ValidationError) as error:
        services.create_agent(by=people["agent_owner"], tenant=tenant, name="Ownerless", slug="ownerless", purpose="x")
    assert "owner" in error.value.message_dict
    assert not Agent.objects.filter(slug="ownerless").exists()


def test_owner_must_hold_a_role_in_the_agents_tenant(tenant, people, other_tenant):
    from ..accounts.factories import member

    outsider = member(other_tenant, "agent_owner", username="outsider")
    with pytest.raises(ValidationError) as error:
        services.create_agent(by=people["agent_owner"], tenant=tenant, name="A", slug="a", purpose="x", owner=outsider)
    assert "role in this agent's tenant" in error.value.message_dict["owner"][0]


def test_duplicate_slug_in_a_tenant_is_refused_and_nothing_is_saved(agent, people):
    before = Agent.objects.count()
    with pytest.raises(ValidationError) as error:
        services.create_agent(
            by=people["agent_owner"],
            tenant=agent.tenant,
            name="Another",
            slug=agent.slug,
            purpose="x",
            owner=people["agent_owner"],
            prompt_text="You are another agent.",
        )
    assert "__all__" in error.value.message_dict or "slug" in error.value.message_dict
    assert Agent.objects.count() == before
    assert not PromptVersion.objects.filter(text="You are another agent.").exists()


def test_same_slug_in_another_tenant_is_fine(agent, other_agent):
    AgentFactory(tenant=other_agent.tenant, slug=agent.slug)


def test_support_agent_cannot_create_agents(tenant, people):
    with pytest.raises(PermissionDenied):
        services.create_agent(
            by=people["support_agent"], tenant=tenant, name="A", slug="a", purpose="x", owner=people["agent_owner"]
        )


def test_agent_owner_of_one_tenant_cannot_edit_another_tenants_agent(people, other_agent):
    with pytest.raises(PermissionDenied):
        services.update_agent(agent=other_agent, by=people["agent_owner"], purpose="hijacked")
    other_agent.refresh_from_db()
    assert other_agent.purpose != "hijacked"


def test_publishing_a_prompt_creates_a_new_immutable_version(agent, people):
    first = services.publish_prompt(agent=agent, text="Version one", author=people["agent_owner"])
    second = services.publish_prompt(agent=agent, text="Version two", author=people["agent_owner"], change_note="tone")
    agent.refresh_from_db()
    assert (first.number, second.number) == (1, 2)
    assert agent.current_prompt == second
    first.refresh_from_db()
    assert first.text == "Version one"

    first.text = "rewritten history"
    with pytest.raises(ValidationError):
        first.save()
    with pytest.raises(ValidationError):
        first.delete()
    assert PromptVersion.objects.get(pk=first.pk).text == "Version one"


def test_publishing_the_same_text_does_not_create_a_version(agent, people):
    version = services.publish_prompt(agent=agent, text="Same", author=people["agent_owner"])
    again = services.publish_prompt(agent=agent, text="Same", author=people["agent_owner"])
    assert again.pk == version.pk
    assert agent.prompt_versions.count() == 1


def test_prompt_approval_by_its_author_is_refused(agent, people):
    version = services.publish_prompt(agent=agent, text="Prompt", author=people["agent_owner"])
    with pytest.raises(PermissionDenied):
        services.approve_prompt(version=version, approver=people["agent_owner"])
    approved = services.approve_prompt(version=version, approver=people["admin"])
    assert approved.approved_by == people["admin"]
    with pytest.raises(ValidationError):
        services.approve_prompt(version=version, approver=people["admin"])


def test_suspending_one_agent_leaves_others_running(agent, people):
    sibling = AgentFactory(tenant=agent.tenant, owner=people["agent_owner"])
    services.suspend_agent(agent=agent, by=people["security"], reason="Quoting a deprecated policy")
    agent.refresh_from_db()
    assert agent.status == AgentStatus.SUSPENDED
    assert agent.status_changed_by == people["security"]
    assert agent.status_reason == "Quoting a deprecated policy"
    assert services.may_start_turn(agent.pk).allowed is False
    assert "suspended" in services.may_start_turn(agent.pk).reason
    assert services.may_start_turn(sibling.pk).allowed is True

    last = agent.history.first()
    assert last.history_user == people["security"]
    assert "Quoting a deprecated policy" in last.history_change_reason


def test_suspension_needs_a_reason_and_the_right_role(agent, people):
    with pytest.raises(ValidationError):
        services.suspend_agent(agent=agent, by=people["security"], reason="  ")
    for kind in ("support_agent", "knowledge_owner", "compliance", "nobody"):
        with pytest.raises(PermissionDenied):
            services.suspend_agent(agent=agent, by=people[kind], reason="why not")
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


def test_resume_and_retire(agent, people):
    services.suspend_agent(agent=agent, by=people["support_lead"], reason="incident")
    services.resume_agent(agent=agent, by=people["agent_owner"], reason="fixed")
    assert services.may_start_turn(agent.pk).allowed
    services.retire_agent(agent=agent, by=people["agent_owner"], reason="replaced")
    with pytest.raises(ValidationError):
        services.resume_agent(agent=agent, by=people["agent_owner"], reason="undo")
    assert not services.may_start_turn(agent.pk).allowed


def test_global_kill_switch_stops_every_tenants_agents(agent, other_agent, superuser):
    services.set_kill_switch(engaged=True, by=superuser, reason="Model provider incident")
    for candidate in (agent, other_agent):
        verdict = services.may_start_turn(candidate.pk)
        assert not verdict.allowed
        assert "Model provider incident" in verdict.reason
    switch = KillSwitch.objects.get(scope=KillSwitch.GLOBAL_SCOPE)
    assert switch.changed_by == superuser
    assert switch.history.first().history_user == superuser

    services.set_kill_switch(engaged=False, by=superuser, reason="Provider recovered")
    assert services.may_start_turn(agent.pk).allowed
    assert switch.history.count() == 2


def test_tenant_kill_switch_stops_only_that_tenant(agent, other_agent, people):
    services.set_kill_switch(engaged=True, by=people["security"], reason="Data leak review", tenant=agent.tenant)
    assert not services.may_start_turn(agent.pk).allowed
    assert services.may_start_turn(other_agent.pk).allowed


def test_only_platform_administrators_operate_the_global_switch(people):
    for kind in ("security", "admin"):
        with pytest.raises(PermissionDenied):
            services.set_kill_switch(engaged=True, by=people[kind], reason="x")
    assert not KillSwitch.objects.filter(engaged=True).exists()


def test_security_cannot_operate_another_tenants_switch(people, other_tenant):
    with pytest.raises(PermissionDenied):
        services.set_kill_switch(engaged=True, by=people["security"], reason="x", tenant=other_tenant)


def test_invalid_channel_and_model_are_explained(tenant, people):
    from .factories import ModelProviderFactory

    provider = ModelProviderFactory(tenant=tenant)
    with pytest.raises(ValidationError) as error:
        services.create_agent(
            by=people["agent_owner"],
            tenant=tenant,
            name="A",
            slug="a",
            purpose="x",
            owner=people["agent_owner"],
            channels=["carrier_pigeon"],
            model_provider=provider,
            model_name="not-offered",
        )
    assert "channels" in error.value.message_dict
    assert "small-model" in error.value.message_dict["model_name"][0]


def test_an_agent_whose_owner_left_can_be_suspended_but_not_reactivated(agent, people):
    from apps.accounts.models import Membership

    Membership.objects.filter(user=people["agent_owner"]).delete()
    services.suspend_agent(agent=agent, by=people["security"], reason="Owner left the company")
    agent.refresh_from_db()
    assert agent.status == AgentStatus.SUSPENDED

    with pytest.raises(ValidationError) as error:
        services.resume_agent(agent=agent, by=people["security"], reason="Back to work")
    assert "owner" in error.value.message_dict
    agent.refresh_from_db()
    assert agent.status == AgentStatus.SUSPENDED
