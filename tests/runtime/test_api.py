"""/api/v1/conversations/ and /api/v1/turns/: who may talk to an agent, as whom, and what
they read back, over the wire."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.agents import services as agent_services
from apps.runtime import services
from apps.runtime.choices import Decision, StepKind, TurnStatus
from apps.runtime.models import Conversation, Turn
from tests.model_server import reply

from ..accounts.factories import member

pytestmark = pytest.mark.django_db

CONVERSATIONS_URL = "/api/v1/conversations/"


def turns_url(conversation) -> str:
    return f"{CONVERSATIONS_URL}{conversation.pk}/turns/"


def turn_url(turn_id) -> str:
    return f"/api/v1/turns/{turn_id}/"


def as_user(api_client, user):
    """Log in through the session, so each request re-reads the user and their roles."""
    api_client.force_login(user)
    return api_client


def results(response) -> list[dict]:
    body = response.json()
    return body["results"] if isinstance(body, dict) and "results" in body else body


def new_conversation(agent, **overrides) -> dict:
    payload = {"agent": agent.pk, "channel": "web_chat", "subject": "C-2002", "subject_verified": True, "region": "eu"}
    payload.update(overrides)
    return payload


@pytest.fixture
def client_of(api_client):
    return lambda user: as_user(api_client, user)


@pytest.fixture
def stranger(other_tenant):
    """A support agent of the other tenant: may talk to Globex's agents, not Acme's."""
    return member(other_tenant, "support_agent", username="globex.agent")


@pytest.fixture
def post_turn(client_of, django_capture_on_commit_callbacks):
    """POST a message as ``user`` and run the turn as the embedded default does (after the commit)."""

    def send(conversation, user, data, **headers):
        with django_capture_on_commit_callbacks(execute=True):
            return client_of(user).post(turns_url(conversation), data, format="json", **headers)

    return send


# --- Opening a conversation ----------------------------------------------------------------------


def test_opening_a_conversation_makes_the_authenticated_user_its_actor(client_of, chat_agent, actor):
    response = client_of(actor).post(CONVERSATIONS_URL, new_conversation(chat_agent), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["actor"], body["tenant"], body["agent"]) == ("support.agent", "acme", chat_agent.pk)
    assert (body["subject"], body["subject_verified"], body["region"]) == ("C-2002", True, "eu")
    assert (body["status"], body["turn_count"]) == ("open", 0)
    conversation = Conversation.objects.get(pk=body["id"])
    assert (conversation.actor, conversation.tenant_id) == (actor, chat_agent.tenant_id)


@pytest.mark.parametrize("field", ["actor", "user", "on_behalf_of"])
def test_opening_a_conversation_as_somebody_else_is_refused(client_of, chat_agent, actor, people, field):
    payload = new_conversation(chat_agent, **{field: people["support_lead"].username})

    response = client_of(actor).post(CONVERSATIONS_URL, payload, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not Conversation.objects.exists()


def test_an_agent_of_another_tenant_reads_as_missing(client_of, chat_agent, other_agent, actor):
    response = client_of(actor).post(CONVERSATIONS_URL, new_conversation(other_agent), format="json")

    assert response.status_code == 400
    assert "does not exist" in str(response.json()["agent"])
    assert not Conversation.objects.exists()


def test_a_channel_the_agent_does_not_serve_is_refused_with_the_reason(client_of, chat_agent, actor):
    response = client_of(actor).post(CONVERSATIONS_URL, new_conversation(chat_agent, channel="voice"), format="json")

    assert response.status_code == 400
    reason = str(response.json()["channel"])
    assert "voice" in reason and "web_chat" in reason
    assert not Conversation.objects.exists()


@pytest.mark.parametrize("kind", ["knowledge_owner", "nobody"])
def test_a_user_without_runtime_permission_cannot_open_a_conversation(client_of, chat_agent, people, kind):
    response = client_of(people[kind]).post(CONVERSATIONS_URL, new_conversation(chat_agent), format="json")

    # The agent is outside what they may talk to, so it reads as "does not exist".
    assert response.status_code == 400
    assert "does not exist" in str(response.json()["agent"])
    assert not Conversation.objects.exists()


def test_anonymous_callers_can_neither_open_nor_read(api_client, chat_agent, conversation):
    assert api_client.post(CONVERSATIONS_URL, new_conversation(chat_agent), format="json").status_code == 401
    assert api_client.get(CONVERSATIONS_URL).status_code == 401
    assert api_client.post(turns_url(conversation), {"text": "hi"}, format="json").status_code == 401
    assert Conversation.objects.count() == 1 and not Turn.objects.exists()


def test_list_filters_in_the_query_string_do_not_break_opening_a_conversation(client_of, chat_agent, actor):
    response = client_of(actor).post(f"{CONVERSATIONS_URL}?status=closed", new_conversation(chat_agent), format="json")

    assert response.status_code == 201


# --- Posting a turn ------------------------------------------------------------------------------


def test_a_posted_turn_is_accepted_runs_and_its_trace_reads_in_order(post_turn, client_of, conversation, model_server):
    model_server.enqueue(reply("Your parcel left the warehouse yesterday."))

    response = post_turn(conversation, conversation.actor, {"text": "Where is my parcel?"})

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == TurnStatus.QUEUED  # as it was when answered, before the commit ran it
    assert body["url"].endswith(turn_url(body["id"]))
    assert (body["actor"], body["number"], body["input"]) == ("support.agent", 1, "Where is my parcel?")
    trace = client_of(conversation.actor).get(turn_url(body["id"]))
    assert trace.status_code == 200
    turn = trace.json()
    assert turn["status"] == TurnStatus.COMPLETED
    assert turn["decision"] in Decision.values and turn["output"]  # no knowledge here: a fallback, still an answer
    steps = turn["steps"]
    assert [step["number"] for step in steps] == list(range(1, len(steps) + 1))
    kinds = [step["kind"] for step in steps]
    assert StepKind.MODEL_CALL in kinds and kinds[-1] == StepKind.DECISION
    assert kinds.index(StepKind.MODEL_CALL) < kinds.index(StepKind.DECISION)


def test_the_turns_of_a_conversation_are_listed_in_order(client_of, conversation, talk, model_server):
    model_server.enqueue(reply("First answer."), reply("Second answer."))
    talk(conversation, "First question about my order")
    talk(conversation, "Second question about my order")

    response = client_of(conversation.actor).get(turns_url(conversation))

    assert response.status_code == 200
    assert [(turn["number"], turn["input"]) for turn in response.json()] == [
        (1, "First question about my order"),
        (2, "Second question about my order"),
    ]


@pytest.mark.parametrize("field", ["actor", "user", "on_behalf_of"])
def test_posting_a_turn_as_somebody_else_is_refused(post_turn, conversation, people, model_server, field):
    response = post_turn(conversation, conversation.actor, {"text": "Hello", field: people["support_lead"].username})

    assert response.status_code == 400
    assert field in response.json()
    assert not Turn.objects.exists()
    assert model_server.requests == []


@pytest.mark.parametrize(
    ("data", "headers"),
    [
        ({"text": "Where is my parcel?", "client_key": "msg-1"}, {}),
        ({"text": "Where is my parcel?"}, {"HTTP_IDEMPOTENCY_KEY": "msg-1"}),
    ],
    ids=["client_key", "Idempotency-Key"],
)
def test_posting_the_same_idempotency_key_again_returns_the_first_turn(
    post_turn, conversation, model_server, data, headers
):
    model_server.enqueue(reply("On its way."), reply("A second answer nobody should ask for."))

    first = post_turn(conversation, conversation.actor, data, **headers)
    again = post_turn(conversation, conversation.actor, data, **headers)

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == TurnStatus.COMPLETED
    assert Turn.objects.count() == 1
    assert len(model_server.requests) == 1


def test_another_user_of_the_tenant_cannot_continue_someone_elses_conversation(
    post_turn, conversation, people, model_server
):
    response = post_turn(conversation, people["support_lead"], {"text": "Let me take over"})

    assert response.status_code == 403
    assert not Turn.objects.exists()
    assert model_server.requests == []


def test_a_user_of_another_tenant_sees_neither_the_conversation_nor_its_turns(
    client_of, post_turn, conversation, talk, model_server, stranger
):
    model_server.enqueue(reply("Hello."))
    turn = talk(conversation, "Hello there")
    client = client_of(stranger)

    assert client.get(f"{CONVERSATIONS_URL}{conversation.pk}/").status_code == 404
    assert client.get(turns_url(conversation)).status_code == 404
    assert client.get(turn_url(turn.pk)).status_code == 404
    assert post_turn(conversation, stranger, {"text": "Hijack"}).status_code == 404
    assert Turn.objects.count() == 1


def test_an_unknown_or_malformed_turn_id_is_404(client_of, actor):
    client = client_of(actor)
    assert client.get(turn_url("00000000-0000-0000-0000-000000000000")).status_code == 404
    assert client.get(turn_url("not-a-uuid")).status_code == 404


def test_the_tenant_kill_switch_refuses_new_turns_with_409(post_turn, conversation, people, tenant, model_server):
    agent_services.set_kill_switch(engaged=True, by=people["security"], reason="Incident 42", tenant=tenant)

    response = post_turn(conversation, conversation.actor, {"text": "Where is my parcel?"})

    assert response.status_code == 409
    assert "kill switch" in response.json()["detail"] and "Incident 42" in response.json()["detail"]
    assert not Turn.objects.exists()
    assert model_server.requests == []


def test_a_suspended_agent_refuses_new_turns_with_409(post_turn, conversation, chat_agent, people, model_server):
    agent_services.suspend_agent(agent=chat_agent, by=people["support_lead"], reason="Answers look wrong")

    response = post_turn(conversation, conversation.actor, {"text": "Where is my parcel?"})

    assert response.status_code == 409
    assert "suspended" in response.json()["detail"]
    assert not Turn.objects.exists()
    assert model_server.requests == []


def test_a_turn_still_unfinished_makes_the_next_post_409(client_of, conversation, model_server):
    client = client_of(conversation.actor)
    first = client.post(turns_url(conversation), {"text": "First message"}, format="json")  # never runs: no commit
    assert first.status_code == 202

    second = client.post(turns_url(conversation), {"text": "Second message"}, format="json")

    assert second.status_code == 409
    assert "Turn 1" in second.json()["detail"]
    assert list(Turn.objects.values_list("number", "status")) == [(1, TurnStatus.QUEUED)]


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_an_empty_message_is_refused(post_turn, conversation, model_server, text):
    response = post_turn(conversation, conversation.actor, {"text": text})

    assert response.status_code == 400
    assert "text" in response.json()
    assert not Turn.objects.exists()


def test_a_missing_text_field_is_refused(post_turn, conversation):
    response = post_turn(conversation, conversation.actor, {"client_key": "k"})

    assert response.status_code == 400 and "text" in response.json()
    assert not Turn.objects.exists()


def test_a_message_over_the_input_limit_is_refused_and_one_at_it_accepted(
    settings, post_turn, conversation, model_server
):
    settings.TURN_MAX_INPUT_CHARS = 40
    model_server.enqueue(reply("Noted."))

    too_long = post_turn(conversation, conversation.actor, {"text": "x" * 41})
    at_limit = post_turn(conversation, conversation.actor, {"text": "y" * 40})

    assert too_long.status_code == 400
    assert "40" in str(too_long.json()["text"])
    assert at_limit.status_code == 202
    assert list(Turn.objects.values_list("input", flat=True)) == ["y" * 40]


def test_an_idempotency_key_over_100_characters_is_refused(post_turn, conversation):
    response = post_turn(conversation, conversation.actor, {"text": "Hello"}, HTTP_IDEMPOTENCY_KEY="k" * 101)

    assert response.status_code == 400 and "client_key" in response.json()
    assert not Turn.objects.exists()


# --- Listing conversations -------------------------------------------------------------------------


def test_the_list_shows_only_conversations_of_tenants_the_caller_may_view(
    client_of, conversation, other_agent, stranger, people, talk, model_server
):
    model_server.enqueue(reply("One."), reply("Two."))
    talk(conversation, "First question")
    talk(conversation, "Second question")
    theirs = services.open_conversation(actor=stranger, agent=other_agent, channel="web_chat", subject="G-1")

    ours = results(client_of(people["support_lead"]).get(CONVERSATIONS_URL))
    assert [(row["id"], row["turn_count"]) for row in ours] == [(str(conversation.pk), 2)]
    assert [row["id"] for row in results(client_of(stranger).get(CONVERSATIONS_URL))] == [str(theirs.pk)]
    assert results(client_of(people["knowledge_owner"]).get(CONVERSATIONS_URL)) == []


def test_the_list_costs_the_same_queries_for_two_or_six_conversations(client_of, chat_agent, actor):
    client = client_of(actor)

    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(CONVERSATIONS_URL)
        assert response.status_code == 200
        return len(queries)

    def open_more(n: int) -> None:
        for index in range(n):
            services.open_conversation(actor=actor, agent=chat_agent, channel="api", subject=f"C-{index}")

    open_more(2)
    with_two = count_queries()
    open_more(4)
    with_six = count_queries()

    assert len(results(client.get(CONVERSATIONS_URL))) == 6
    assert with_six == with_two


def test_a_non_numeric_agent_filter_is_a_client_error_not_a_crash(client_of, conversation, actor):
    response = client_of(actor).get(f"{CONVERSATIONS_URL}?agent=abc")

    assert response.status_code in (200, 400)


# --- Compliance ------------------------------------------------------------------------------------


def test_compliance_reads_a_trace_but_cannot_post(client_of, post_turn, conversation, talk, people, model_server):
    model_server.enqueue(reply("Hello."))
    turn = talk(conversation, "Hello there")

    trace = client_of(people["compliance"]).get(turn_url(turn.pk))
    refused = post_turn(conversation, people["compliance"], {"text": "Compliance says hi"})

    assert trace.status_code == 200 and trace.json()["steps"]
    assert refused.status_code == 403
    assert Turn.objects.count() == 1


def test_internal_audience_is_refused_on_a_customer_channel(client_of, chat_agent, actor):
    response = client_of(actor).post(
        CONVERSATIONS_URL, {**new_conversation(chat_agent), "audience": "internal"}, format="json"
    )

    assert response.status_code == 400
    assert "audience" in response.json()
    assert not Conversation.objects.exists()
