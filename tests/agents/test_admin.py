"""The Django admin for agents, kill switches and memberships: each person sees and changes
only what their roles allow, tenant by tenant, and every write goes through the services."""

import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.accounts.models import Membership, Role
from apps.agents import services
from apps.agents.choices import AgentStatus, Environment, RolloutMode
from apps.agents.models import Agent, KillSwitch, ModelProvider, PromptVersion

from ..accounts.factories import member
from .factories import AgentFactory, ModelProviderFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:agents_agent_changelist")
ADD = reverse("admin:agents_agent_add")


def change_url(agent) -> str:
    return reverse("admin:agents_agent_change", args=[agent.pk])


def history_url(agent) -> str:
    return reverse("admin:agents_agent_history", args=[agent.pk])


def logged_in(client, user):
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def inline_management(total: int = 0) -> dict:
    return {
        "prompt_versions-TOTAL_FORMS": str(total),
        "prompt_versions-INITIAL_FORMS": str(total),
        "prompt_versions-MIN_NUM_FORMS": "0",
        "prompt_versions-MAX_NUM_FORMS": "1000",
    }


def add_form_data(tenant, owner_user, **overrides) -> dict:
    data = {
        "tenant": str(tenant.pk),
        "name": "Returns Helper",
        "slug": "returns-helper",
        "purpose": "Helps customers return items.",
        "owner": str(owner_user.pk),
        "business_owner": "Customer care",
        "environment": Environment.STAGING,
        "channels": ["web_chat", "email"],
        "connected_systems": "Zendesk\nShopify\n\nZendesk",
        "rollout_mode": RolloutMode.SHADOW,
        "model_provider": "",
        "model_name": "",
        "max_steps_per_turn": "6",
        "max_cost_per_turn": "0.25",
        "confidence_threshold": "0.30",
        "escalation_topics": '{"legal": ["lawyer", "sue"]}',
        "escalate_on_request": "on",
        "escalate_after_fallbacks": "2",
        "system_prompt": "You help customers with returns.",
        "prompt_change_note": "",
        "_save": "Save",
        **inline_management(0),
    }
    data.update(overrides)
    return data


def change_form_data(agent, **overrides) -> dict:
    data = {
        "name": agent.name,
        "slug": agent.slug,
        "purpose": agent.purpose,
        "owner": str(agent.owner_id),
        "business_owner": agent.business_owner,
        "environment": agent.environment,
        "channels": list(agent.channels),
        "connected_systems": "\n".join(agent.connected_systems),
        "rollout_mode": agent.rollout_mode,
        "model_provider": "",
        "model_name": "",
        "max_steps_per_turn": str(agent.max_steps_per_turn),
        "max_cost_per_turn": str(agent.max_cost_per_turn),
        "confidence_threshold": str(agent.confidence_threshold),
        "escalation_topics": json.dumps(agent.escalation_topics),
        "escalate_on_request": "on" if agent.escalate_on_request else "",
        "escalate_on_negative_sentiment": "on" if agent.escalate_on_negative_sentiment else "",
        "escalate_after_fallbacks": str(agent.escalate_after_fallbacks),
        "system_prompt": agent.current_prompt.text if agent.current_prompt_id else "",
        "prompt_change_note": "",
        "_save": "Save",
        **inline_management(agent.prompt_versions.count()),
    }
    data.update(overrides)
    return data


# --- Changelist ---------------------------------------------------------------------------


def test_agent_owner_sees_only_their_tenants_agents(client, agent, other_agent, people):
    response = logged_in(client, people["agent_owner"]).get(CHANGELIST)
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [agent]
    content = response.content.decode()
    assert agent.name in content
    assert other_agent.name not in content


def test_changelist_filters_do_not_reveal_other_tenants(client, agent, other_agent, people):
    content = logged_in(client, people["agent_owner"]).get(CHANGELIST).content.decode()
    assert other_agent.tenant.name not in content
    assert other_agent.owner.username not in content


def test_superuser_sees_every_tenants_agents(client, agent, other_agent, superuser):
    response = logged_in(client, superuser).get(CHANGELIST)
    assert response.status_code == 200
    assert set(response.context["cl"].result_list) == {agent, other_agent}


def test_changelist_query_count_does_not_grow_with_agents(client, tenant, people):
    owner = people["agent_owner"]
    logged_in(client, owner)

    def add_agents(count: int) -> None:
        for _ in range(count):
            new = AgentFactory(tenant=tenant, owner=owner)
            services.publish_prompt(agent=new, text=f"Prompt of {new.slug}", author=owner)

    def count_queries() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(CHANGELIST)
        assert response.status_code == 200
        return len(response.context["cl"].result_list), len(queries)

    add_agents(3)
    few_rows, few_queries = count_queries()
    add_agents(27)
    many_rows, many_queries = count_queries()
    assert (few_rows, many_rows) == (3, 30)
    assert few_queries == many_queries


def test_changelist_filters(client, tenant, agent, other_agent, people, superuser):
    staging = AgentFactory(
        tenant=tenant,
        owner=people["agent_owner"],
        slug="staging-one",
        environment=Environment.STAGING,
        rollout_mode=RolloutMode.SHADOW,
    )
    services.suspend_agent(agent=staging, by=people["security"], reason="incident")
    logged_in(client, superuser)

    def listed(**params) -> set:
        response = client.get(CHANGELIST, params)
        assert response.status_code == 200, params  # an unknown filter redirects to ?e=1
        return set(response.context["cl"].result_list)

    assert listed(status__exact="suspended") == {staging}
    assert listed(status__exact="active") == {agent, other_agent}
    assert listed(rollout_mode__exact="shadow") == {staging}
    assert listed(environment__exact="staging") == {staging}
    assert listed(environment__exact="prod") == {agent, other_agent}
    assert listed(tenant__id__exact=str(other_agent.tenant_id)) == {other_agent}
    assert listed(tenant__id__exact=str(tenant.pk), status__exact="active") == {agent}


def test_agent_owner_filters_respond(client, agent, people):
    logged_in(client, people["agent_owner"])
    for params in (
        {"status__exact": "active"},
        {"rollout_mode__exact": "assist"},
        {"environment__exact": "prod"},
        {"tenant__id__exact": str(agent.tenant_id)},
    ):
        response = client.get(CHANGELIST, params)
        assert response.status_code == 200, params
        assert list(response.context["cl"].result_list) == [agent], params


# --- Adding -------------------------------------------------------------------------------


def test_agent_owner_adds_an_agent_with_its_first_prompt(client, tenant, people):
    owner = people["agent_owner"]
    response = logged_in(client, owner).post(ADD, add_form_data(tenant, owner))
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    assert response.url == CHANGELIST

    agent = Agent.objects.get(tenant=tenant, slug="returns-helper")
    assert agent.owner == owner
    assert agent.channels == ["web_chat", "email"]
    assert agent.connected_systems == ["Zendesk", "Shopify"]
    assert agent.environment == Environment.STAGING
    assert agent.rollout_mode == RolloutMode.SHADOW
    assert agent.status == AgentStatus.ACTIVE
    assert [(version.number, version.text) for version in agent.prompt_versions.all()] == [
        (1, "You help customers with returns.")
    ]
    assert agent.current_prompt.number == 1
    assert agent.history.first().history_user == owner


def test_a_new_agent_above_shadow_is_refused_with_the_reason_and_nothing_saved(client, tenant, people):
    owner = people["agent_owner"]
    response = logged_in(client, owner).post(ADD, add_form_data(tenant, owner, rollout_mode=RolloutMode.SUGGEST))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "starts in shadow mode" in " ".join(errors["rollout_mode"])
    assert not Agent.objects.filter(slug="returns-helper").exists()


def test_adding_without_a_prompt_creates_no_version(client, tenant, people):
    owner = people["agent_owner"]
    response = logged_in(client, owner).post(ADD, add_form_data(tenant, owner, system_prompt=""))
    assert response.status_code == 302
    agent = Agent.objects.get(slug="returns-helper")
    assert agent.current_prompt is None
    assert not PromptVersion.objects.exists()


def test_adding_without_an_owner_explains_and_saves_nothing(client, tenant, people):
    owner = people["agent_owner"]
    response = logged_in(client, owner).post(ADD, add_form_data(tenant, owner, owner=""))
    assert response.status_code == 200
    assert "owner" in response.context["adminform"].form.errors
    assert "Every agent needs an owner" in response.content.decode()
    assert not Agent.objects.exists()
    assert not PromptVersion.objects.exists()


def test_adding_a_duplicate_slug_explains_and_saves_nothing(client, agent, people):
    owner = people["agent_owner"]
    before = Agent.objects.count()
    response = logged_in(client, owner).post(
        ADD, add_form_data(agent.tenant, owner, slug=agent.slug, system_prompt="Another prompt")
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "slug" in errors or "__all__" in errors
    assert "already" in str(errors)
    assert Agent.objects.count() == before
    assert not PromptVersion.objects.filter(text="Another prompt").exists()


def test_adding_in_another_tenant_is_refused(client, other_tenant, people):
    owner = people["agent_owner"]
    response = logged_in(client, owner).post(ADD, add_form_data(other_tenant, owner))
    assert response.status_code == 200
    assert "tenant" in response.context["adminform"].form.errors
    assert not Agent.objects.exists()


def test_owner_choices_are_people_of_the_users_tenants(client, agent, other_agent, people):
    response = logged_in(client, people["agent_owner"]).get(ADD)
    owners = set(response.context["adminform"].form.fields["owner"].queryset)
    assert people["agent_owner"] in owners
    assert other_agent.owner not in owners
    assert people["nobody"] not in owners
    tenants = set(response.context["adminform"].form.fields["tenant"].queryset)
    assert tenants == {agent.tenant}


# --- Changing -----------------------------------------------------------------------------


def test_changing_the_prompt_publishes_a_new_version(client, agent, people):
    owner = people["agent_owner"]
    first = services.publish_prompt(agent=agent, text="Version one", author=owner)
    agent.refresh_from_db()

    response = logged_in(client, owner).post(
        change_url(agent), change_form_data(agent, system_prompt="Version two", prompt_change_note="warmer")
    )
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    agent.refresh_from_db()
    assert agent.current_prompt.number == 2
    assert agent.current_prompt.text == "Version two"
    assert agent.current_prompt.change_note == "warmer"
    assert agent.current_prompt.author == owner
    first.refresh_from_db()
    assert (first.number, first.text) == (1, "Version one")
    assert agent.prompt_versions.count() == 2


def test_saving_without_changing_the_prompt_publishes_nothing(client, agent, people):
    owner = people["agent_owner"]
    services.publish_prompt(agent=agent, text="Version one", author=owner)
    agent.refresh_from_db()
    response = logged_in(client, owner).post(change_url(agent), change_form_data(agent, purpose="New purpose"))
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.purpose == "New purpose"
    assert agent.prompt_versions.count() == 1


def test_tenant_and_status_cannot_be_changed_in_the_form(client, agent, other_tenant, people):
    response = logged_in(client, people["agent_owner"]).post(
        change_url(agent), change_form_data(agent, tenant=str(other_tenant.pk), status=AgentStatus.RETIRED)
    )
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.tenant_id != other_tenant.pk
    assert agent.status == AgentStatus.ACTIVE


def test_another_tenants_agent_cannot_be_seen_or_changed(client, other_agent, people):
    logged_in(client, people["admin"])
    response = client.get(change_url(other_agent))
    assert response.status_code == 302
    assert response.url == reverse("admin:index")
    # Django's message: agent with ID "<pk>" doesn't exist. Perhaps it was deleted?
    assert any("exist" in message and str(other_agent.pk) in message for message in messages_of(response))

    response = client.post(change_url(other_agent), change_form_data(other_agent, purpose="hijacked"), follow=True)
    assert other_agent.name not in response.content.decode()
    other_agent.refresh_from_db()
    assert other_agent.purpose != "hijacked"


# --- History ------------------------------------------------------------------------------


def test_history_page_shows_who_changed_what(client, agent, people):
    owner = people["agent_owner"]
    logged_in(client, owner).post(change_url(agent), change_form_data(agent, purpose="Answers billing questions."))
    services.suspend_agent(agent=agent, by=people["security"], reason="Quoting a deprecated policy")

    response = logged_in(client, people["compliance"]).get(history_url(agent))
    assert response.status_code == 200
    content = response.content.decode()
    assert "agent.owner" in content
    assert "security" in content
    assert "Quoting a deprecated policy" in content
    assert "Answers billing questions." in content
    records = list(response.context["page_obj"])
    assert [record.history_user for record in records[:2]] == [people["security"], owner]


def test_history_of_another_tenants_agent_is_refused(client, other_agent, people):
    response = logged_in(client, people["admin"]).get(history_url(other_agent))
    assert response.status_code in (403, 404)
    assert other_agent.name not in response.content.decode()


def test_a_history_revision_of_another_tenants_agent_is_refused(client, other_agent, people):
    record = other_agent.history.first()
    url = reverse("admin:agents_agent_simple_history", args=[other_agent.pk, record.history_id])
    response = logged_in(client, people["admin"]).get(url)
    assert response.status_code in (403, 404)


def test_a_history_revision_cannot_be_posted_back_as_a_change(client, agent, people):
    """Reverts are disabled: posting to a revision page must not change the agent, even
    for someone who may view it."""
    record = agent.history.first()
    url = reverse("admin:agents_agent_simple_history", args=[agent.pk, record.history_id])
    for kind in ("compliance", "agent_owner"):
        response = logged_in(client, people[kind]).post(url, change_form_data(agent, purpose="rewritten"))
        assert response.status_code in (403, 405), kind
    agent.refresh_from_db()
    assert agent.purpose != "rewritten"


def test_model_provider_revision_cannot_be_posted_by_a_reader(client, tenant, people):
    provider = ModelProviderFactory(tenant=tenant, name="OpenAI")
    record = provider.history.first()
    url = reverse("admin:agents_modelprovider_simple_history", args=[provider.pk, record.history_id])
    response = logged_in(client, people["compliance"]).post(
        url,
        {
            "tenant": str(tenant.pk),
            "name": "OpenAI",
            "base_url": "http://attacker.example/v1",
            "api_key_env_var": "TEST_MODEL_API_KEY",
            "model_names": '["small-model"]',
            "input_price_per_million": "0",
            "output_price_per_million": "0",
            "timeout_seconds": "30",
            "max_retries": "2",
            "is_active": "on",
        },
    )
    provider.refresh_from_db()
    assert provider.base_url == "http://127.0.0.1:9/v1"
    assert response.status_code in (403, 405)


def test_role_revision_cannot_be_posted_to_grant_access(client, tenant, people):
    admin_role = Role.objects.get(tenant=tenant, kind="admin")
    record = admin_role.history.first()
    url = reverse("admin:accounts_role_simple_history", args=[admin_role.pk, record.history_id])
    response = logged_in(client, people["compliance"]).post(
        url,
        {"name": admin_role.name, "description": "", "idp_groups": '["acme:admin", "everyone"]'},
    )
    admin_role.refresh_from_db()
    assert admin_role.idp_groups == ["acme:admin"]
    assert response.status_code in (403, 405)


# --- Suspend action -----------------------------------------------------------------------


def test_suspend_action_asks_for_a_reason_then_suspends_only_the_selected(client, agent, people):
    sibling = AgentFactory(tenant=agent.tenant, owner=people["agent_owner"], name="Sibling")
    logged_in(client, people["security"])

    response = client.post(CHANGELIST, {"action": "suspend_selected", ACTION_CHECKBOX_NAME: [agent.pk], "index": 0})
    assert response.status_code == 200
    content = response.content.decode()
    assert "Reason (required)" in content
    assert agent.name in content
    assert sibling.name not in content
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE

    response = client.post(
        CHANGELIST,
        {"action": "suspend_selected", ACTION_CHECKBOX_NAME: [agent.pk], "apply": "1", "reason": "Leaking data"},
    )
    assert response.status_code == 302
    agent.refresh_from_db()
    sibling.refresh_from_db()
    assert agent.status == AgentStatus.SUSPENDED
    assert agent.status_reason == "Leaking data"
    assert agent.status_changed_by == people["security"]
    assert sibling.status == AgentStatus.ACTIVE
    assert services.may_start_turn(agent.pk).allowed is False


def test_suspend_action_without_reason_suspends_nothing(client, agent, people):
    response = logged_in(client, people["security"]).post(
        CHANGELIST, {"action": "suspend_selected", ACTION_CHECKBOX_NAME: [agent.pk], "apply": "1", "reason": ""}
    )
    assert response.status_code == 200
    assert "required" in response.content.decode().lower()
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


def test_resume_action(client, agent, people):
    services.suspend_agent(agent=agent, by=people["security"], reason="incident")
    response = logged_in(client, people["agent_owner"]).post(
        CHANGELIST, {"action": "resume_selected", ACTION_CHECKBOX_NAME: [agent.pk], "apply": "1", "reason": "fixed"}
    )
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


def test_user_without_suspend_rights_has_no_suspend_action(client, agent, people):
    logged_in(client, people["knowledge_owner"])
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    action_form = response.context["action_form"]
    names = [name for name, _ in action_form.fields["action"].choices] if action_form else []
    assert "suspend_selected" not in names
    assert "resume_selected" not in names

    response = client.post(
        CHANGELIST, {"action": "suspend_selected", ACTION_CHECKBOX_NAME: [agent.pk], "apply": "1", "reason": "x"}
    )
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


def test_security_sees_the_suspend_action(client, agent, people):
    response = logged_in(client, people["security"]).get(CHANGELIST)
    names = [name for name, _ in response.context["action_form"].fields["action"].choices]
    assert "suspend_selected" in names


# --- Kill switches ------------------------------------------------------------------------

KILL_SWITCH_ADD = reverse("admin:agents_killswitch_add")


def test_security_engages_their_tenants_switch(client, agent, people):
    response = logged_in(client, people["security"]).post(
        KILL_SWITCH_ADD, {"tenant": str(agent.tenant_id), "engaged": "on", "reason": "Data leak review"}
    )
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    switch = KillSwitch.objects.get()
    assert switch.tenant == agent.tenant
    assert switch.engaged is True
    assert switch.reason == "Data leak review"
    assert switch.changed_by == people["security"]
    assert services.may_start_turn(agent.pk).allowed is False


def test_security_cannot_engage_the_global_switch(client, agent, people):
    response = logged_in(client, people["security"]).post(
        KILL_SWITCH_ADD, {"tenant": "", "engaged": "on", "reason": "Panic"}
    )
    assert response.status_code == 200
    assert "tenant" in response.context["adminform"].form.errors
    assert "platform administrator" in response.content.decode()
    assert not KillSwitch.objects.exists()
    assert services.may_start_turn(agent.pk).allowed is True


def test_security_cannot_engage_another_tenants_switch(client, other_agent, people):
    response = logged_in(client, people["security"]).post(
        KILL_SWITCH_ADD, {"tenant": str(other_agent.tenant_id), "engaged": "on", "reason": "x"}
    )
    assert response.status_code == 200
    assert "tenant" in response.context["adminform"].form.errors
    assert not KillSwitch.objects.exists()


def test_kill_switch_needs_a_reason(client, tenant, people):
    response = logged_in(client, people["security"]).post(
        KILL_SWITCH_ADD, {"tenant": str(tenant.pk), "engaged": "on", "reason": ""}
    )
    assert response.status_code == 200
    assert "reason" in response.context["adminform"].form.errors
    assert not KillSwitch.objects.exists()


def test_superuser_engages_the_global_switch(client, agent, other_agent, superuser):
    response = logged_in(client, superuser).post(KILL_SWITCH_ADD, {"tenant": "", "engaged": "on", "reason": "Outage"})
    assert response.status_code == 302
    switch = KillSwitch.objects.get(scope=KillSwitch.GLOBAL_SCOPE)
    assert switch.engaged is True
    assert switch.tenant is None
    assert switch.changed_by == superuser
    assert services.may_start_turn(agent.pk).allowed is False
    assert services.may_start_turn(other_agent.pk).allowed is False


def test_security_cannot_release_the_global_switch(client, agent, people, superuser):
    switch = services.set_kill_switch(engaged=True, by=superuser, reason="Outage")
    url = reverse("admin:agents_killswitch_change", args=[switch.pk])
    response = logged_in(client, people["security"]).post(url, {"engaged": "", "reason": "All clear"})
    assert response.status_code == 403
    switch.refresh_from_db()
    assert switch.engaged is True


# --- Role permissions in the admin --------------------------------------------------------


def test_knowledge_owner_reads_agents_but_cannot_add(client, agent, people):
    logged_in(client, people["knowledge_owner"])
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert response.context["has_add_permission"] is False
    assert ADD not in response.content.decode()
    assert client.get(ADD).status_code == 403
    assert client.post(ADD, add_form_data(agent.tenant, people["agent_owner"], slug="sneaky")).status_code == 403
    assert not Agent.objects.filter(slug="sneaky").exists()


def test_compliance_reads_but_changes_nothing(client, agent, people):
    logged_in(client, people["compliance"])
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [agent]
    assert client.get(change_url(agent)).status_code == 200
    assert client.get(ADD).status_code == 403

    response = client.post(change_url(agent), change_form_data(agent, purpose="hijacked"))
    assert response.status_code == 403
    agent.refresh_from_db()
    assert agent.purpose != "hijacked"


def test_support_agent_is_not_let_into_the_admin(client, agent, people):
    response = logged_in(client, people["support_agent"]).get("/admin/")
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))
    assert client.get(CHANGELIST).status_code == 302


def test_user_without_roles_is_not_let_into_the_admin(client, agent, people):
    response = logged_in(client, people["nobody"]).get(CHANGELIST)
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


def test_model_provider_admin_is_scoped(client, tenant, other_tenant, people):
    mine = ModelProviderFactory(tenant=tenant, name="Ours")
    theirs = ModelProviderFactory(tenant=other_tenant, name="Theirs")
    response = logged_in(client, people["agent_owner"]).get(reverse("admin:agents_modelprovider_changelist"))
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [mine]
    response = client.get(reverse("admin:agents_modelprovider_change", args=[theirs.pk]))
    assert response.status_code == 302
    assert ModelProvider.objects.get(pk=theirs.pk).name == "Theirs"


# --- Memberships --------------------------------------------------------------------------

MEMBERSHIP_ADD = reverse("admin:accounts_membership_add")


def test_tenant_admin_adds_a_membership_and_staff_access_follows(client, tenant, people):
    newcomer = people["support_agent"]
    assert newcomer.is_staff is False
    role = Role.objects.get(tenant=tenant, kind="knowledge_owner")

    response = logged_in(client, people["admin"]).post(MEMBERSHIP_ADD, {"user": str(newcomer.pk), "role": str(role.pk)})
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    assert Membership.objects.filter(user=newcomer, role=role).exists()
    newcomer.refresh_from_db()
    assert newcomer.is_staff is True
    assert newcomer.groups.filter(name="role:knowledge_owner").exists()


def test_membership_role_choices_are_the_admins_tenant_only(client, tenant, other_tenant, people):
    response = logged_in(client, people["admin"]).get(MEMBERSHIP_ADD)
    assert response.status_code == 200
    roles = set(response.context["adminform"].form.fields["role"].queryset)
    assert roles == set(Role.objects.filter(tenant=tenant))
    assert other_tenant.name not in response.content.decode()


def test_tenant_admin_cannot_assign_another_tenants_role(client, other_tenant, people):
    globex_admin = Role.objects.get(tenant=other_tenant, kind="admin")
    response = logged_in(client, people["admin"]).post(
        MEMBERSHIP_ADD, {"user": str(people["nobody"].pk), "role": str(globex_admin.pk)}
    )
    assert response.status_code == 200
    assert "role" in response.context["adminform"].form.errors
    assert not Membership.objects.filter(role=globex_admin).exists()
    people["nobody"].refresh_from_db()
    assert people["nobody"].is_staff is False


@pytest.mark.parametrize("kind", ["security", "compliance", "agent_owner"])
def test_other_roles_cannot_add_memberships(client, tenant, people, kind):
    role = Role.objects.get(tenant=tenant, kind="admin")
    response = logged_in(client, people[kind]).post(
        MEMBERSHIP_ADD, {"user": str(people["nobody"].pk), "role": str(role.pk)}
    )
    assert response.status_code == 403
    assert not Membership.objects.filter(user=people["nobody"]).exists()


def test_user_history_of_another_tenants_person_is_refused(client, other_tenant, people):
    outsider = member(other_tenant, "support_agent", username="globex.person", email="secret@globex.example")
    response = logged_in(client, people["admin"]).get(reverse("admin:accounts_user_history", args=[outsider.pk]))
    # Refused, or Django's "doesn't exist" redirect to the admin index.
    assert response.status_code in (302, 403, 404)
    if response.status_code == 302:
        assert response.url == reverse("admin:index")
    assert "secret@globex.example" not in response.content.decode()
    assert "globex.person" not in response.content.decode()


def test_user_history_of_a_person_in_the_admins_tenant_is_shown(client, tenant, people):
    response = logged_in(client, people["admin"]).get(
        reverse("admin:accounts_user_history", args=[people["support_agent"].pk])
    )
    assert response.status_code == 200


def test_tenant_history_of_another_tenant_is_refused(client, other_tenant, people):
    response = logged_in(client, people["admin"]).get(reverse("admin:accounts_tenant_history", args=[other_tenant.pk]))
    assert response.status_code in (403, 404)
    assert other_tenant.name not in response.content.decode()


def test_tenant_admin_cannot_take_over_someone_who_also_works_for_another_tenant(
    client, people, other_tenant, superuser
):
    shared = member(other_tenant, "admin", username="shared.person")
    member(people["admin"].memberships.first().role.tenant, "support_agent", username="shared.person")
    client.force_login(people["admin"])

    own = client.get(f"/admin/accounts/user/{people['support_agent'].pk}/password/")
    assert own.status_code == 200

    for target in (shared, superuser):
        page = client.get(f"/admin/accounts/user/{target.pk}/password/")
        assert page.status_code != 200
        client.post(
            f"/admin/accounts/user/{target.pk}/password/",
            {"password1": "taken-over-2026!", "password2": "taken-over-2026!", "usable_password": "true"},
        )
        target.refresh_from_db()
        assert not target.check_password("taken-over-2026!")
