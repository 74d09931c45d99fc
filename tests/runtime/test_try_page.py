"""The "try it" page: talk to an agent as yourself with a chosen subject context, and read
each turn's trace; a running turn is polled (htmx) until it finishes."""

import pytest
from django.urls import reverse

from apps.agents import services as agents
from apps.runtime.models import Conversation, Turn
from apps.runtime.services import open_conversation, submit_turn
from tests.model_server import reply

pytestmark = pytest.mark.django_db

TRY = reverse("runtime:try")


def start_form(agent, **overrides) -> dict:
    return {"agent": agent.pk, "channel": "web_chat", "audience": "customer", "subject": "C-1001", **overrides}


def test_an_agent_owner_starts_a_conversation_with_the_subject_they_chose(client, people, chat_agent):
    client.force_login(people["agent_owner"])

    response = client.post(TRY, {**start_form(chat_agent), "subject_verified": "on", "region": "eu"})

    conversation = Conversation.objects.get()
    assert response.status_code == 302 and response.url == reverse("runtime:conversation", args=[conversation.pk])
    assert conversation.actor == people["agent_owner"]
    assert (conversation.subject, conversation.subject_verified, conversation.region) == ("C-1001", True, "eu")


def test_a_message_runs_a_turn_and_its_trace_is_shown(
    client, people, chat_agent, model_server, django_capture_on_commit_callbacks
):
    owner = people["agent_owner"]
    conversation = open_conversation(actor=owner, agent=chat_agent, channel="web_chat", subject="C-1001")
    model_server.enqueue(reply("Is it about an order?"))
    client.force_login(owner)
    page = reverse("runtime:conversation", args=[conversation.pk])

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(page, {"text": "I have a problem"})
    assert response.status_code == 302

    shown = client.get(page).content.decode()
    assert "I have a problem" in shown and "Is it about an order?" in shown
    assert "Model call" in shown and "Decision" in shown and "clarify" in shown
    assert "hx-trigger" not in shown  # finished: nothing to poll


def test_a_running_turn_is_polled_until_it_finishes(client, people, chat_agent):
    owner = people["agent_owner"]
    conversation = open_conversation(actor=owner, agent=chat_agent, channel="web_chat")
    turn = submit_turn(conversation=conversation, actor=owner, text="Hello")  # queued: its task never ran
    client.force_login(owner)

    page = client.get(reverse("runtime:conversation", args=[conversation.pk])).content.decode()
    fragment = reverse("runtime:turn", args=[conversation.pk, turn.pk])
    assert f'hx-get="{fragment}"' in page and 'hx-trigger="every 1s"' in page
    assert "htmx.min.js" in page
    assert '<meta http-equiv="refresh"' in page  # without JavaScript the page refreshes itself
    assert client.get(fragment).status_code == 200


def test_the_page_is_for_your_own_conversations_only(client, people, chat_agent):
    conversation = open_conversation(actor=people["agent_owner"], agent=chat_agent, channel="web_chat")
    client.force_login(people["support_lead"])

    assert client.get(reverse("runtime:conversation", args=[conversation.pk])).status_code == 404
    response = client.post(reverse("runtime:conversation", args=[conversation.pk]), {"text": "hijack"})
    assert response.status_code == 404
    assert not Turn.objects.exists()


def test_someone_without_a_role_that_may_talk_to_agents_is_offered_none(client, people, chat_agent):
    client.force_login(people["knowledge_owner"])

    assert "No agent you may talk to" in client.get(TRY).content.decode()
    response = client.post(TRY, start_form(chat_agent))
    assert response.status_code == 200 and "agent" in response.context["form"].errors
    assert not Conversation.objects.exists()


def test_a_refused_turn_says_why_and_keeps_nothing(client, people, chat_agent):
    owner = people["agent_owner"]
    conversation = open_conversation(actor=owner, agent=chat_agent, channel="web_chat")
    agents.suspend_agent(agent=chat_agent, by=people["security"], reason="Reviewing answers")
    client.force_login(owner)

    response = client.post(reverse("runtime:conversation", args=[conversation.pk]), {"text": "Hello"}, follow=True)

    assert "suspended" in response.content.decode()
    assert not Turn.objects.exists()


def test_an_internal_audience_on_a_customer_channel_is_refused_with_the_reason(client, people, chat_agent):
    client.force_login(people["agent_owner"])

    response = client.post(TRY, start_form(chat_agent, audience="internal"))

    assert response.status_code == 200
    assert "audience" in response.context["form"].errors
    assert not Conversation.objects.exists()
