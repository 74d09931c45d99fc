"""/api/v1/agents/ and /api/v1/kill-switches/: who may read and do what, over the wire."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts.models import ApiToken
from apps.accounts.services import create_api_token, revoke_api_token
from apps.agents import services
from apps.agents.choices import AgentStatus, Environment, RolloutMode
from apps.agents.models import Agent, KillSwitch, PromptVersion

from ..accounts.factories import member
from .factories import AgentFactory

pytestmark = pytest.mark.django_db

AGENTS_URL = "/api/v1/agents/"
KILL_SWITCHES_URL = "/api/v1/kill-switches/"


def detail_url(agent) -> str:
    return f"{AGENTS_URL}{agent.pk}/"


def results(response) -> list[dict]:
    body = response.json()
    return body["results"] if isinstance(body, dict) and "results" in body else body


def slugs(response) -> set[str]:
    return {row["slug"] for row in results(response)}


def as_user(api_client, user):
    """Log in through the session, as a browser would (each request re-reads the user and roles)."""
    api_client.force_login(user)
    return api_client


def new_agent_payload(**overrides) -> dict:
    payload = {
        "tenant": "acme",
        "slug": "returns-helper",
        "name": "Returns Helper",
        "purpose": "Helps customers return items.",
        "owner": "agent.owner",
        "channels": ["web_chat", "email"],
        "connected_systems": ["Zendesk", "Shopify"],
        "prompt": "You help customers with returns.",
    }
    payload.update(overrides)
    return payload


# --- Authentication -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", AGENTS_URL),
        ("post", AGENTS_URL),
        ("get", "{detail}"),
        ("patch", "{detail}"),
        ("post", "{detail}suspend/"),
        ("post", "{detail}resume/"),
        ("post", "{detail}retire/"),
        ("post", "{detail}prompt/"),
        ("get", KILL_SWITCHES_URL),
        ("post", KILL_SWITCHES_URL + "engage/"),
        ("post", KILL_SWITCHES_URL + "release/"),
    ],
)
def test_anonymous_requests_are_refused(api_client, agent, method, path):
    url = path.format(detail=detail_url(agent))
    response = getattr(api_client, method)(url, {"reason": "x", "text": "x", "purpose": "hijacked"}, format="json")
    assert response.status_code in (401, 403)
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE
    assert agent.purpose != "hijacked"
    assert agent.current_prompt is None
    assert not KillSwitch.objects.exists()


def test_anonymous_gets_401_with_bearer_challenge(api_client):
    response = api_client.get(AGENTS_URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


# --- Listing and reading ------------------------------------------------------------------


def test_list_shows_only_agents_of_tenants_where_the_user_holds_a_role(api_client, agent, other_agent, people):
    for kind in ("support_agent", "knowledge_owner", "compliance", "security", "agent_owner", "admin"):
        response = as_user(api_client, people[kind]).get(AGENTS_URL)
        assert response.status_code == 200, kind
        assert slugs(response) == {agent.slug}, kind


def test_list_for_a_user_without_roles_is_empty(api_client, agent, other_agent, people):
    response = as_user(api_client, people["nobody"]).get(AGENTS_URL)
    assert response.status_code == 200
    assert results(response) == []


def test_superuser_lists_every_tenants_agents(api_client, agent, other_agent, superuser):
    response = as_user(api_client, superuser).get(AGENTS_URL)
    assert response.status_code == 200
    assert slugs(response) == {agent.slug, other_agent.slug}


def test_user_with_roles_in_two_tenants_sees_both(api_client, agent, other_agent, people):
    member(other_agent.tenant, "compliance", username="compliance.officer")
    both = member(agent.tenant, "compliance", username="compliance.officer")
    response = as_user(api_client, both).get(AGENTS_URL)
    assert slugs(response) == {agent.slug, other_agent.slug}


def test_detail_shows_the_agent(api_client, agent, people):
    services.publish_prompt(agent=agent, text="Be kind.", author=people["agent_owner"])
    response = as_user(api_client, people["support_agent"]).get(detail_url(agent))
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == agent.pk
    assert body["tenant"] == "acme"
    assert body["owner"] == "agent.owner"
    assert body["current_prompt_version"] == 1
    assert body["status"] == AgentStatus.ACTIVE


def test_detail_of_another_tenants_agent_is_not_found(api_client, other_agent, people):
    response = as_user(api_client, people["admin"]).get(detail_url(other_agent))
    assert response.status_code == 404


def test_detail_for_a_user_without_roles_is_not_found(api_client, agent, people):
    response = as_user(api_client, people["nobody"]).get(detail_url(agent))
    assert response.status_code == 404


def test_list_filters(api_client, tenant, agent, other_agent, people, superuser):
    owner = people["agent_owner"]
    AgentFactory(
        tenant=tenant,
        owner=owner,
        slug="staging-suggester",
        environment=Environment.STAGING,
        rollout_mode=RolloutMode.SUGGEST,
    )
    suspended = AgentFactory(tenant=tenant, owner=people["admin"], slug="paused", environment=Environment.DEVELOPMENT)
    services.suspend_agent(agent=suspended, by=people["security"], reason="incident")

    client = as_user(api_client, superuser)
    assert slugs(client.get(AGENTS_URL, {"status": "suspended"})) == {"paused"}
    assert slugs(client.get(AGENTS_URL, {"status": "active", "tenant": "acme"})) == {agent.slug, "staging-suggester"}
    assert slugs(client.get(AGENTS_URL, {"rollout_mode": "suggest"})) == {"staging-suggester"}
    assert slugs(client.get(AGENTS_URL, {"environment": "staging"})) == {"staging-suggester"}
    assert slugs(client.get(AGENTS_URL, {"environment": "dev"})) == {"paused"}
    assert slugs(client.get(AGENTS_URL, {"tenant": "globex"})) == {other_agent.slug}
    assert slugs(client.get(AGENTS_URL, {"owner": "agent.owner"})) == {agent.slug, "staging-suggester"}
    assert slugs(client.get(AGENTS_URL, {"owner": "admin"})) == {"paused"}


def test_tenant_filter_cannot_reach_another_tenant(api_client, agent, other_agent, people):
    response = as_user(api_client, people["agent_owner"]).get(AGENTS_URL, {"tenant": "globex"})
    assert response.status_code == 200
    assert results(response) == []


def test_listing_takes_the_same_number_of_queries_for_3_and_20_agents(api_client, tenant, people):
    client = as_user(api_client, people["compliance"])
    owner = people["agent_owner"]

    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(AGENTS_URL)
        assert response.status_code == 200
        return len(results(response)), len(queries)

    def add_agents(count: int) -> None:
        # Every related row the list shows is filled in: owner, prompt, who changed the status.
        for _ in range(count):
            agent = AgentFactory(tenant=tenant, owner=owner)
            services.publish_prompt(agent=agent, text=f"Prompt for {agent.slug}", author=owner)
            services.suspend_agent(agent=agent, by=people["security"], reason="incident")

    add_agents(3)
    few_rows, few_queries = count_queries()
    add_agents(17)
    many_rows, many_queries = count_queries()

    assert (few_rows, many_rows) == (3, 20)
    assert few_queries == many_queries


# --- Creating -----------------------------------------------------------------------------


def test_agent_owner_creates_an_agent_with_its_first_prompt(api_client, tenant, people):
    response = as_user(api_client, people["agent_owner"]).post(AGENTS_URL, new_agent_payload(), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["slug"] == "returns-helper"
    assert body["current_prompt_version"] == 1
    assert "prompt" not in body

    agent = Agent.objects.get(tenant=tenant, slug="returns-helper")
    assert body["id"] == agent.pk
    assert agent.owner == people["agent_owner"]
    assert agent.channels == ["web_chat", "email"]
    assert agent.connected_systems == ["Zendesk", "Shopify"]
    assert agent.status == AgentStatus.ACTIVE
    assert agent.rollout_mode == RolloutMode.SHADOW
    versions = list(agent.prompt_versions.all())
    assert [(version.number, version.text) for version in versions] == [(1, "You help customers with returns.")]
    assert agent.current_prompt == versions[0]
    assert versions[0].author == people["agent_owner"]
    assert agent.history.first().history_user == people["agent_owner"]


def test_create_without_prompt_has_no_prompt_version(api_client, tenant, people):
    payload = new_agent_payload()
    del payload["prompt"]
    response = as_user(api_client, people["admin"]).post(AGENTS_URL, payload, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["current_prompt_version"] is None
    assert not PromptVersion.objects.exists()


@pytest.mark.parametrize("kind", ["support_agent", "compliance", "knowledge_owner", "security"])
def test_roles_without_add_rights_cannot_create(api_client, tenant, people, kind):
    response = as_user(api_client, people[kind]).post(AGENTS_URL, new_agent_payload(), format="json")
    assert response.status_code == 403
    assert not Agent.objects.exists()
    assert not PromptVersion.objects.exists()


def test_a_user_without_roles_cannot_even_name_the_tenant(api_client, tenant, people):
    response = as_user(api_client, people["nobody"]).post(AGENTS_URL, new_agent_payload(), format="json")
    assert response.status_code == 400
    assert "does not exist" in str(response.json()["tenant"])
    assert not Agent.objects.exists()


def test_agent_owner_cannot_create_in_another_tenant(api_client, other_tenant, people):
    globex_owner = member(other_tenant, "agent_owner", username="globex.owner")
    response = as_user(api_client, people["agent_owner"]).post(
        AGENTS_URL, new_agent_payload(tenant="globex", owner=globex_owner.username), format="json"
    )
    assert response.status_code == 400
    assert not Agent.objects.exists()
    # Another organisation's tenant and its people answer exactly like ones that do not exist.
    missing = as_user(api_client, people["agent_owner"]).post(
        AGENTS_URL, new_agent_payload(tenant="no-such-tenant", owner="no.such.person"), format="json"
    )
    assert [response.json()[field] for field in ("tenant", "owner")] == [
        [
            message.replace("no-such-tenant", "globex").replace("no.such.person", "globex.owner")
            for message in missing.json()[field]
        ]
        for field in ("tenant", "owner")
    ]


def test_create_without_owner_is_refused_naming_the_field(api_client, tenant, people):
    payload = new_agent_payload()
    del payload["owner"]
    response = as_user(api_client, people["agent_owner"]).post(AGENTS_URL, payload, format="json")
    assert response.status_code == 400
    assert "owner" in response.json()
    assert not Agent.objects.exists()
    assert not PromptVersion.objects.exists()


def test_create_with_null_owner_is_refused_naming_the_field(api_client, tenant, people):
    response = as_user(api_client, people["agent_owner"]).post(AGENTS_URL, new_agent_payload(owner=None), format="json")
    assert response.status_code == 400
    assert "owner" in response.json()
    assert not Agent.objects.exists()


def test_create_with_owner_outside_the_tenant_is_refused(api_client, tenant, other_tenant, people):
    member(other_tenant, "agent_owner", username="globex.owner")
    # The caller works in both tenants, so it may name Globex's owner, but not for an Acme agent.
    member(other_tenant, "agent_owner", username=people["agent_owner"].username)
    response = as_user(api_client, people["agent_owner"]).post(
        AGENTS_URL, new_agent_payload(owner="globex.owner"), format="json"
    )
    assert response.status_code == 400
    assert "role in this agent's tenant" in response.json()["owner"][0]
    assert not Agent.objects.exists()


def test_duplicate_slug_in_the_same_tenant_is_refused(api_client, agent, people):
    before = Agent.objects.count()
    response = as_user(api_client, people["agent_owner"]).post(
        AGENTS_URL, new_agent_payload(slug=agent.slug, prompt="A different prompt"), format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert "slug" in body, body
    assert agent.slug in " ".join(body["slug"])
    assert Agent.objects.count() == before
    assert not PromptVersion.objects.filter(text="A different prompt").exists()


def test_same_slug_in_another_tenant_is_fine(api_client, other_agent, people):
    response = as_user(api_client, people["agent_owner"]).post(
        AGENTS_URL, new_agent_payload(slug=other_agent.slug), format="json"
    )
    assert response.status_code == 201, response.content
    assert Agent.objects.filter(slug=other_agent.slug).count() == 2


def test_unknown_rollout_mode_is_refused(api_client, tenant, people):
    response = as_user(api_client, people["agent_owner"]).post(
        AGENTS_URL, new_agent_payload(rollout_mode="yolo"), format="json"
    )
    assert response.status_code == 400
    assert "rollout_mode" in response.json()
    assert "yolo" in str(response.json()["rollout_mode"])
    assert not Agent.objects.exists()


def test_unknown_channel_is_refused(api_client, tenant, people):
    response = as_user(api_client, people["agent_owner"]).post(
        AGENTS_URL, new_agent_payload(channels=["web_chat", "carrier_pigeon"]), format="json"
    )
    assert response.status_code == 400
    assert "channels" in response.json()
    assert "carrier_pigeon" in str(response.json()["channels"])
    assert not Agent.objects.exists()


def test_duplicate_channel_is_refused(api_client, tenant, people):
    response = as_user(api_client, people["agent_owner"]).post(
        AGENTS_URL, new_agent_payload(channels=["email", "email"]), format="json"
    )
    assert response.status_code == 400
    assert "channels" in response.json()
    assert not Agent.objects.exists()


def test_status_cannot_be_set_on_create(api_client, tenant, people):
    response = as_user(api_client, people["agent_owner"]).post(
        AGENTS_URL, new_agent_payload(status="suspended"), format="json"
    )
    assert response.status_code == 201
    assert Agent.objects.get(slug="returns-helper").status == AgentStatus.ACTIVE


# --- Editing ------------------------------------------------------------------------------


def test_agent_owner_updates_purpose(api_client, agent, people):
    response = as_user(api_client, people["agent_owner"]).patch(
        detail_url(agent), {"purpose": "Answers billing questions."}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["purpose"] == "Answers billing questions."
    agent.refresh_from_db()
    assert agent.purpose == "Answers billing questions."
    assert agent.history.first().history_user == people["agent_owner"]


def test_patch_with_invalid_rollout_mode_is_refused(api_client, agent, people):
    response = as_user(api_client, people["agent_owner"]).patch(
        detail_url(agent), {"rollout_mode": "yolo"}, format="json"
    )
    assert response.status_code == 400
    assert "rollout_mode" in response.json()
    agent.refresh_from_db()
    assert agent.rollout_mode == RolloutMode.ASSIST


def test_patch_cannot_change_status(api_client, agent, people):
    response = as_user(api_client, people["agent_owner"]).patch(
        detail_url(agent), {"status": "retired", "status_reason": "sneaky"}, format="json"
    )
    assert response.status_code == 200  # read-only fields are ignored
    assert response.json()["status"] == AgentStatus.ACTIVE
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE
    assert agent.status_reason == ""


def test_patch_cannot_move_an_agent_to_another_tenant(api_client, agent, other_tenant, people):
    response = as_user(api_client, people["agent_owner"]).patch(detail_url(agent), {"tenant": "globex"}, format="json")
    assert response.status_code == 400
    assert "tenant" in response.json()
    agent.refresh_from_db()
    assert agent.tenant.slug == "acme"


def test_patch_with_a_duplicate_slug_is_refused(api_client, agent, people):
    AgentFactory(tenant=agent.tenant, owner=people["agent_owner"], slug="taken")
    response = as_user(api_client, people["agent_owner"]).patch(detail_url(agent), {"slug": "taken"}, format="json")
    assert response.status_code == 400
    assert "slug" in response.json()
    agent.refresh_from_db()
    assert agent.slug == "support-assistant"


@pytest.mark.parametrize("kind", ["support_agent", "compliance", "knowledge_owner", "security"])
def test_roles_without_change_rights_cannot_patch(api_client, agent, people, kind):
    response = as_user(api_client, people[kind]).patch(detail_url(agent), {"purpose": "hijacked"}, format="json")
    assert response.status_code == 403
    agent.refresh_from_db()
    assert agent.purpose != "hijacked"


def test_patch_on_another_tenants_agent_is_not_found(api_client, other_agent, people):
    response = as_user(api_client, people["agent_owner"]).patch(
        detail_url(other_agent), {"purpose": "hijacked"}, format="json"
    )
    assert response.status_code == 404
    other_agent.refresh_from_db()
    assert other_agent.purpose != "hijacked"


def test_agents_are_never_deleted_through_the_api(api_client, agent, superuser):
    response = as_user(api_client, superuser).delete(detail_url(agent))
    assert response.status_code == 405
    assert Agent.objects.filter(pk=agent.pk).exists()


# --- Suspend, resume, retire ---------------------------------------------------------------


def test_security_suspends_one_agent(api_client, agent, people):
    sibling = AgentFactory(tenant=agent.tenant, owner=people["agent_owner"])
    response = as_user(api_client, people["security"]).post(
        detail_url(agent) + "suspend/", {"reason": "Quoting a deprecated policy"}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == AgentStatus.SUSPENDED
    assert body["status_reason"] == "Quoting a deprecated policy"
    assert body["status_changed_by"] == str(people["security"])

    agent.refresh_from_db()
    sibling.refresh_from_db()
    assert agent.status == AgentStatus.SUSPENDED
    assert agent.status_changed_by == people["security"]
    assert sibling.status == AgentStatus.ACTIVE
    assert services.may_start_turn(agent.pk).allowed is False
    assert services.may_start_turn(sibling.pk).allowed is True


def test_suspend_without_reason_is_refused(api_client, agent, people):
    client = as_user(api_client, people["security"])
    for payload in ({}, {"reason": ""}, {"reason": "   "}):
        response = client.post(detail_url(agent) + "suspend/", payload, format="json")
        assert response.status_code == 400, payload
        assert "reason" in response.json()
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


@pytest.mark.parametrize("kind", ["support_agent", "compliance", "knowledge_owner"])
def test_roles_without_suspend_rights_cannot_suspend(api_client, agent, people, kind):
    response = as_user(api_client, people[kind]).post(
        detail_url(agent) + "suspend/", {"reason": "why not"}, format="json"
    )
    assert response.status_code == 403
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


def test_suspending_another_tenants_agent_is_not_found(api_client, other_agent, people):
    response = as_user(api_client, people["security"]).post(
        detail_url(other_agent) + "suspend/", {"reason": "why not"}, format="json"
    )
    assert response.status_code == 404
    other_agent.refresh_from_db()
    assert other_agent.status == AgentStatus.ACTIVE


def test_resume_after_suspend(api_client, agent, people):
    services.suspend_agent(agent=agent, by=people["security"], reason="incident")
    response = as_user(api_client, people["support_lead"]).post(
        detail_url(agent) + "resume/", {"reason": "fixed"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == AgentStatus.ACTIVE
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE
    assert agent.status_reason == "fixed"
    assert services.may_start_turn(agent.pk).allowed is True


def test_resuming_an_active_agent_is_refused(api_client, agent, people):
    response = as_user(api_client, people["security"]).post(
        detail_url(agent) + "resume/", {"reason": "just because"}, format="json"
    )
    assert response.status_code == 400
    assert "status" in response.json()


def test_agent_owner_retires_an_agent(api_client, agent, people):
    response = as_user(api_client, people["agent_owner"]).post(
        detail_url(agent) + "retire/", {"reason": "replaced"}, format="json"
    )
    assert response.status_code == 200, response.content
    agent.refresh_from_db()
    assert agent.status == AgentStatus.RETIRED
    assert services.may_start_turn(agent.pk).allowed is False

    again = api_client.post(detail_url(agent) + "resume/", {"reason": "undo"}, format="json")
    assert again.status_code == 400
    agent.refresh_from_db()
    assert agent.status == AgentStatus.RETIRED


def test_security_may_suspend_but_not_retire(api_client, agent, people):
    response = as_user(api_client, people["security"]).post(
        detail_url(agent) + "retire/", {"reason": "replaced"}, format="json"
    )
    assert response.status_code == 403
    agent.refresh_from_db()
    assert agent.status == AgentStatus.ACTIVE


# --- Prompts ------------------------------------------------------------------------------


def test_publishing_a_prompt_creates_a_new_version(api_client, agent, people):
    first = services.publish_prompt(agent=agent, text="Version one", author=people["agent_owner"])
    response = as_user(api_client, people["agent_owner"]).post(
        detail_url(agent) + "prompt/", {"text": "Version two", "change_note": "warmer tone"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["current_prompt_version"] == 2
    agent.refresh_from_db()
    assert agent.current_prompt.number == 2
    assert agent.current_prompt.text == "Version two"
    assert agent.current_prompt.change_note == "warmer tone"
    first.refresh_from_db()
    assert first.text == "Version one"
    assert agent.prompt_versions.count() == 2


def test_publishing_an_empty_prompt_is_refused(api_client, agent, people):
    response = as_user(api_client, people["agent_owner"]).post(
        detail_url(agent) + "prompt/", {"text": ""}, format="json"
    )
    assert response.status_code == 400
    assert "text" in response.json()
    assert not PromptVersion.objects.exists()


@pytest.mark.parametrize("kind", ["support_agent", "compliance", "security"])
def test_roles_without_prompt_rights_cannot_publish(api_client, agent, people, kind):
    response = as_user(api_client, people[kind]).post(detail_url(agent) + "prompt/", {"text": "Obey me"}, format="json")
    assert response.status_code == 403
    assert not PromptVersion.objects.exists()


def test_publishing_on_another_tenants_agent_is_not_found(api_client, other_agent, people):
    response = as_user(api_client, people["agent_owner"]).post(
        detail_url(other_agent) + "prompt/", {"text": "Obey me"}, format="json"
    )
    assert response.status_code == 404
    assert not PromptVersion.objects.exists()


# --- API tokens ---------------------------------------------------------------------------


def test_bearer_token_acts_as_its_user(api_client, agent, other_agent, people):
    token, raw = create_api_token(user=people["agent_owner"], name="CI")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    response = api_client.get(AGENTS_URL)
    assert response.status_code == 200
    assert slugs(response) == {agent.slug}

    response = api_client.patch(detail_url(agent), {"purpose": "Set by a token"}, format="json")
    assert response.status_code == 200
    agent.refresh_from_db()
    assert agent.purpose == "Set by a token"
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_token_digest_not_the_token_is_stored(people):
    token, raw = create_api_token(user=people["agent_owner"], name="CI")
    assert raw.startswith("cpt_")
    stored = [str(value) for row in ApiToken.objects.values() for value in row.values()]
    assert raw not in stored
    assert not any(raw in value for value in stored)
    assert token.digest != raw
    assert len(token.digest) == 64
    assert raw.startswith(token.prefix)


def test_revoked_token_is_refused(api_client, agent, people):
    token, raw = create_api_token(user=people["agent_owner"], name="CI")
    revoke_api_token(token=token)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api_client.get(AGENTS_URL).status_code == 401
    response = api_client.patch(detail_url(agent), {"purpose": "hijacked"}, format="json")
    assert response.status_code == 401
    agent.refresh_from_db()
    assert agent.purpose != "hijacked"


def test_expired_token_is_refused(api_client, agent, people):
    _, raw = create_api_token(user=people["agent_owner"], name="CI", expires_at=timezone.now() - timedelta(seconds=1))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api_client.get(AGENTS_URL).status_code == 401


def test_token_that_has_not_expired_yet_works(api_client, agent, people):
    _, raw = create_api_token(user=people["agent_owner"], name="CI", expires_at=timezone.now() + timedelta(hours=1))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api_client.get(AGENTS_URL).status_code == 200


def test_token_of_a_deactivated_user_is_refused(api_client, agent, people):
    user = people["agent_owner"]
    _, raw = create_api_token(user=user, name="CI")
    user.is_active = False
    user.save(update_fields=["is_active"])
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api_client.get(AGENTS_URL).status_code == 401


@pytest.mark.parametrize("header", ["Bearer cpt_not-a-real-token", "Bearer ", "Bearer a b", "Bearer \u00e9t\u00e9"])
def test_garbage_token_is_refused(api_client, agent, people, header):
    create_api_token(user=people["agent_owner"], name="CI")
    api_client.credentials(HTTP_AUTHORIZATION=header)
    response = api_client.get(AGENTS_URL)
    assert response.status_code == 401


# --- Kill switches ------------------------------------------------------------------------


def test_superuser_engages_the_global_switch(api_client, agent, other_agent, superuser):
    response = as_user(api_client, superuser).post(
        KILL_SWITCHES_URL + "engage/", {"reason": "Provider incident"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["scope"] == KillSwitch.GLOBAL_SCOPE
    assert response.json()["engaged"] is True
    switch = KillSwitch.objects.get(scope=KillSwitch.GLOBAL_SCOPE)
    assert switch.engaged is True
    assert switch.changed_by == superuser
    assert services.may_start_turn(agent.pk).allowed is False
    assert services.may_start_turn(other_agent.pk).allowed is False

    response = api_client.post(KILL_SWITCHES_URL + "release/", {"reason": "Recovered"}, format="json")
    assert response.status_code == 200
    assert response.json()["engaged"] is False
    switch.refresh_from_db()
    assert switch.engaged is False
    assert services.may_start_turn(agent.pk).allowed is True


@pytest.mark.parametrize("kind", ["security", "admin", "agent_owner"])
def test_only_superusers_operate_the_global_switch(api_client, agent, people, kind):
    response = as_user(api_client, people[kind]).post(KILL_SWITCHES_URL + "engage/", {"reason": "x"}, format="json")
    assert response.status_code == 403
    assert not KillSwitch.objects.filter(engaged=True).exists()
    assert services.may_start_turn(agent.pk).allowed is True


def test_kill_switch_needs_a_reason(api_client, agent, superuser):
    response = as_user(api_client, superuser).post(KILL_SWITCHES_URL + "engage/", {}, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()
    assert not KillSwitch.objects.exists()


def test_security_engages_and_releases_their_tenants_switch(api_client, agent, other_agent, people):
    client = as_user(api_client, people["security"])
    response = client.post(
        KILL_SWITCHES_URL + "engage/", {"tenant": "acme", "reason": "Data leak review"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["tenant"] == "acme"
    assert KillSwitch.objects.get(tenant=agent.tenant).engaged is True
    assert services.may_start_turn(agent.pk).allowed is False
    assert services.may_start_turn(other_agent.pk).allowed is True

    response = client.post(KILL_SWITCHES_URL + "release/", {"tenant": "acme", "reason": "Reviewed"}, format="json")
    assert response.status_code == 200
    assert KillSwitch.objects.get(tenant=agent.tenant).engaged is False
    assert services.may_start_turn(agent.pk).allowed is True


def test_security_cannot_engage_another_tenants_switch(api_client, agent, other_agent, people):
    response = as_user(api_client, people["security"]).post(
        KILL_SWITCHES_URL + "engage/", {"tenant": "globex", "reason": "x"}, format="json"
    )
    assert response.status_code == 403
    assert not KillSwitch.objects.exists()
    assert services.may_start_turn(other_agent.pk).allowed is True


@pytest.mark.parametrize("kind", ["support_agent", "support_lead", "compliance", "agent_owner", "nobody"])
def test_other_roles_cannot_engage_their_tenants_switch(api_client, agent, people, kind):
    response = as_user(api_client, people[kind]).post(
        KILL_SWITCHES_URL + "engage/", {"tenant": "acme", "reason": "x"}, format="json"
    )
    assert response.status_code == 403
    assert not KillSwitch.objects.exists()


def test_kill_switch_list(api_client, agent, other_agent, people, superuser):
    services.set_kill_switch(engaged=True, by=superuser, reason="Global incident")
    services.set_kill_switch(engaged=True, by=people["security"], reason="Acme review", tenant=agent.tenant)
    services.set_kill_switch(engaged=False, by=superuser, reason="Globex drill", tenant=other_agent.tenant)

    response = as_user(api_client, superuser).get(KILL_SWITCHES_URL)
    assert response.status_code == 200
    assert {(row["scope"], row["engaged"]) for row in response.json()} == {
        ("global", True),
        (f"tenant:{agent.tenant_id}", True),
        (f"tenant:{other_agent.tenant_id}", False),
    }

    response = as_user(api_client, people["security"]).get(KILL_SWITCHES_URL)
    assert response.status_code == 200
    rows = {row["scope"]: row for row in response.json()}
    assert set(rows) == {"global", f"tenant:{agent.tenant_id}"}
    assert rows[f"tenant:{agent.tenant_id}"]["tenant"] == "acme"
    assert rows[f"tenant:{agent.tenant_id}"]["reason"] == "Acme review"
    assert rows[f"tenant:{agent.tenant_id}"]["changed_by"] == str(people["security"])


def test_kill_switch_list_for_a_user_without_roles_shows_no_tenant_switch(api_client, agent, people, superuser):
    services.set_kill_switch(engaged=True, by=people["security"], reason="Acme review", tenant=agent.tenant)
    response = as_user(api_client, people["nobody"]).get(KILL_SWITCHES_URL)
    assert response.status_code == 200
    assert response.json() == []


def test_security_sees_their_tenants_switch_even_before_the_tenant_has_agents(api_client, tenant, people):
    services.set_kill_switch(engaged=True, by=people["security"], reason="Before launch", tenant=tenant)
    response = as_user(api_client, people["security"]).get(KILL_SWITCHES_URL)
    assert response.status_code == 200
    assert [row["scope"] for row in response.json()] == [f"tenant:{tenant.pk}"]


def test_unknown_and_foreign_tenant_switches_answer_alike(api_client, people, other_tenant):
    client = as_user(api_client, people["security"])
    foreign = client.post(KILL_SWITCHES_URL + "engage/", {"tenant": "globex", "reason": "x"}, format="json")
    unknown = client.post(KILL_SWITCHES_URL + "engage/", {"tenant": "nowhere", "reason": "x"}, format="json")
    assert foreign.status_code == unknown.status_code == 403
    assert foreign.json()["detail"].replace("globex", "nowhere") == unknown.json()["detail"]
    assert not KillSwitch.objects.exists()


def test_engaging_an_unknown_tenants_switch_is_not_found(api_client, superuser):
    response = as_user(api_client, superuser).post(
        KILL_SWITCHES_URL + "engage/", {"tenant": "nonexistent", "reason": "x"}, format="json"
    )
    assert response.status_code == 404
    assert not KillSwitch.objects.exists()


# --- Schema and docs ----------------------------------------------------------------------


def test_openapi_schema_lists_the_agent_endpoints(api_client):
    response = api_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    assert "/api/v1/agents/" in paths
    assert "/api/v1/agents/{id}/suspend/" in paths
    assert "post" in paths["/api/v1/agents/{id}/suspend/"]
    assert "/api/v1/kill-switches/engage/" in paths
    assert "delete" not in paths["/api/v1/agents/{id}/"]
    assert "apiToken" in schema["components"]["securitySchemes"]


def test_api_docs_are_served_without_any_cdn(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger" in html.lower()
    for host in ("cdn.jsdelivr", "unpkg", "cdnjs", "googleapis"):
        assert host not in html
