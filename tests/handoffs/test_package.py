"""The proof the issue asks for: each escalation trigger hands over a complete package — a
specific reason (never just "user requested"), the conversation so far, who the customer is
and their history with us, sources, tool calls, sentiment, urgency, queue and deadline."""

from datetime import timedelta
from decimal import Decimal

import pytest

from apps.handoffs import services
from apps.handoffs.choices import HandoffStatus
from apps.handoffs.models import Handoff
from apps.runtime import handoff_package
from apps.runtime.choices import Decision, StepKind
from apps.runtime.services import open_conversation
from tests.knowledge.factories import source
from tests.model_server import call, error, reply, tool_calls
from tests.tools.conftest import counting_tool
from tests.tools.factories import allow, builtin_tool, grant

pytestmark = pytest.mark.django_db

CUSTOMER = {
    "subject": "C-1001",
    "verified": True,
    "region": "us",
    "segment": "",
    "plan": "",
    "brand": "",
    "audience": "customer",
    "channel": "web_chat",
}
GENERIC = ("user requested", "The customer asked for a person.", "The turn could not be completed by the agent.")


def handoff_of(turn) -> Handoff:
    return Handoff.objects.select_related("queue").get(turn_id=str(turn.pk))


def assert_complete(handoff: Handoff, turn, code: str) -> None:
    """Every part of the package is there and says something."""
    assert handoff.reason_code == code
    assert handoff.reason.strip() and handoff.reason not in GENERIC
    assert len(handoff.reason) > 40  # a sentence a person can act on, not a label
    assert handoff.summary.startswith(f"{turn.agent.name} handed over turn {turn.number}")
    assert handoff.customer == CUSTOMER
    context = handoff.account_context
    assert context["known_customer"] is True
    assert {"earlier_conversations", "earlier_handoffs", "last_contact", "earlier_handoff_count"} <= set(context)
    assert handoff.transcript, "the conversation so far"
    last = handoff.transcript[-1]
    assert last["turn"] == turn.number and last["customer"] == turn.input
    assert last["agent"] == " ".join(turn.output.split())  # what the customer was told this turn
    assert (last["decision"], last["decision_reason"]) == (Decision.ESCALATE, code)
    assert isinstance(handoff.sources, list) and isinstance(handoff.tool_calls, list)
    assert set(handoff.sentiment) == {"label", "score", "cues"}
    assert handoff.urgency in ("normal", "high", "urgent") and handoff.priority == handoff.urgency
    assert handoff.queue is not None and handoff.due_at is not None
    assert handoff.status == HandoffStatus.OPEN
    assert (handoff.subject, handoff.channel) == ("C-1001", "web_chat")
    step = turn.steps.get(kind=StepKind.HANDOFF)
    assert step.detail["handoff_id"] == handoff.pk and step.detail["queue"] == handoff.queue.name


@pytest.fixture
def refund_policy(tenant, people):
    return source(
        tenant,
        people["knowledge_owner"],
        title="Refund policy",
        body="Refunds are accepted within 30 days of delivery for unused items.",
        visibility="public",
    )


@pytest.fixture
def touch_tool(tenant, chat_agent, executions):
    tool = counting_tool(tenant, "orders.touch", description="Touch an order")
    grant(tool, "support_agent")
    allow(chat_agent, tool)
    return tool


def test_human_request_quotes_what_the_customer_said(queues, conversation, talk, model_server):
    turn = talk(conversation, "Enough of this bot, I want to speak to a human about order A-1042")

    handoff = handoff_of(turn)
    assert_complete(handoff, turn, "human_request")
    assert handoff.reason == (
        "The customer asked for a person: “Enough of this bot, I want to speak to a human about order A-1042”."
    )
    assert handoff.queue == queues["tier2"]  # no queue takes human_request by name: the default
    assert handoff.urgency == "normal"
    assert model_server.requests == []


def test_topic_names_the_topic_and_the_word_and_routes_to_its_queue(queues, conversation, talk):
    turn = talk(conversation, "My attorney will be in touch about the broken blender")

    handoff = handoff_of(turn)
    assert_complete(handoff, turn, "topic")
    assert "“legal” (the word “attorney”)" in handoff.reason
    assert handoff.topic == "legal"
    assert handoff.queue == queues["legal"]
    assert handoff.urgency == "high"  # a topic handed to people
    assert handoff.due_at - handoff.created_at == pytest.approx(timedelta(minutes=15), abs=timedelta(seconds=5))


def test_a_billing_dispute_goes_to_billing(queues, conversation, talk):
    turn = talk(conversation, "I was double charged for my last order")

    handoff = handoff_of(turn)
    assert_complete(handoff, turn, "topic")
    assert (handoff.topic, handoff.queue) == ("billing dispute", queues["billing"])


def test_negative_sentiment_gives_the_score_and_cues(queues, conversation, talk):
    turn = talk(conversation, "This is the worst, most useless service. I am furious!!")

    handoff = handoff_of(turn)
    assert_complete(handoff, turn, "negative_sentiment")
    assert handoff.sentiment["label"] == "negative"
    assert set(handoff.sentiment["cues"]) >= {"worst", "useless", "furious", "shouting"}
    assert f"sentiment score {handoff.sentiment['score']}" in handoff.reason
    assert "furious" in handoff.reason and "“This is the worst" in handoff.reason
    assert handoff.urgency == "high"


def test_two_triggers_at_once_name_both_and_the_topic_still_routes(queues, conversation, talk):
    turn = talk(conversation, "Let me speak to a human, my lawyer says this is unacceptable and I am furious!!")

    handoff = handoff_of(turn)
    assert_complete(handoff, turn, "human_request")
    assert handoff.reason.endswith("Also fired: topic, negative_sentiment.")
    assert handoff.queue == queues["legal"]  # routed by the topic even though a request for a person came first
    assert handoff.urgency == "urgent"  # upset, and a topic handed to people


def test_repeated_failure_counts_the_fallbacks_and_keeps_the_whole_exchange(
    queues, chat_agent, conversation, talk, model_server
):
    chat_agent.escalate_after_fallbacks = 2
    chat_agent.save()
    model_server.enqueue(reply("I am not sure."), reply("Still not sure."))

    first = talk(conversation, "What is the warranty on blenders?")
    second = talk(conversation, "And on toasters?")

    handoff = handoff_of(second)
    assert_complete(handoff, second, "repeated_failure")
    assert "could not give an approved answer 2 times in a row (it hands over after 2)" in handoff.reason
    assert "Earlier: turn 1 knowledge_gap." in handoff.reason
    assert [entry["turn"] for entry in handoff.transcript] == [1, 2]
    assert handoff.transcript[0] == {
        "turn": 1,
        "customer": "What is the warranty on blenders?",
        "agent": " ".join(first.output.split()),
        "decision": Decision.FALLBACK,
        "decision_reason": "knowledge_gap",
    }


def test_low_confidence_names_the_coverage_the_threshold_and_the_cited_source(
    queues, chat_agent, conversation, talk, model_server, refund_policy
):
    chat_agent.confidence_threshold = Decimal("0.95")
    chat_agent.save()
    model_server.enqueue(reply("Within 30 days [S1]."))

    turn = talk(conversation, "Are refunds accepted for opened blenders bought abroad?")

    handoff = handoff_of(turn)
    assert_complete(handoff, turn, "low_confidence")
    assert "below its 95% threshold, so the answer was not sent" in handoff.reason
    assert handoff.sources == [
        {"source_id": refund_policy.pk, "title": "Refund policy", "version": 1, "turn": 1, "cited": True}
    ]
    assert "Sources found: Refund policy (cited)." in handoff.summary


def test_the_step_limit_names_the_limit_and_lists_the_tool_calls(
    queues, chat_agent, conversation, talk, model_server, touch_tool
):
    chat_agent.max_steps_per_turn = 2
    chat_agent.save()
    model_server.enqueue(*(tool_calls(call("orders__touch", {"note": f"n{i}"})) for i in range(3)))

    turn = talk(conversation, "Touch my order, again and again")

    handoff = handoff_of(turn)
    assert_complete(handoff, turn, "step_limit")
    assert "used all 2 model calls the agent may make per turn" in handoff.reason
    assert "max model calls per turn" in handoff.reason
    assert [(entry["tool"], entry["outcome"]) for entry in handoff.tool_calls] == [
        ("orders.touch", "executed"),
        ("orders.touch", "executed"),
    ]
    assert "Tools tried: orders.touch executed; orders.touch executed." in handoff.summary


def test_the_cost_limit_names_the_limit_and_what_the_turn_cost(
    queues, chat_agent, conversation, talk, model_server, touch_tool
):
    chat_agent.max_cost_per_turn = Decimal("0.01")
    chat_agent.save()
    model_server.enqueue(tool_calls(call("orders__touch", {"note": "x"}), prompt_tokens=10_000, completion_tokens=10))

    turn = talk(conversation, "Touch my order")

    handoff = handoff_of(turn)
    assert_complete(handoff, turn, "cost_limit")
    assert f"The turn cost {turn.cost:.4f}, reaching the agent's limit of 0.0100 per turn" in handoff.reason
    assert handoff.tool_calls[0]["tool"] == "orders.touch"


def test_a_model_that_keeps_failing_escalates_as_repeated_failure(queues, chat_agent, conversation, talk, model_server):
    chat_agent.escalate_after_fallbacks = 1
    chat_agent.save()
    model_server.enqueue(error(500))

    turn = talk(conversation, "Where is my parcel?")

    handoff = handoff_of(turn)
    assert_complete(handoff, turn, "repeated_failure")
    assert "1 times in a row" in handoff.reason


def test_account_context_lists_earlier_conversations_and_handoffs_of_the_customer(
    queues, chat_agent, actor, conversation, talk, other_agent
):
    earlier = open_conversation(actor=actor, agent=chat_agent, channel="web_chat", subject="C-1001")
    first = talk(earlier, "I want to speak to a human")
    previous = handoff_of(first)
    services.claim(handoff_id=previous.pk, by=actor)
    services.resolve(handoff_id=previous.pk, by=actor, resolution="Refunded order A-1042 by hand.")
    open_conversation(actor=actor, agent=chat_agent, channel="web_chat", subject="C-2002")  # someone else

    turn = talk(conversation, "Can I talk to a real person please")

    context = handoff_of(turn).account_context
    assert context["earlier_conversation_count"] == 1
    assert context["earlier_conversations"][0]["conversation_id"] == str(earlier.pk)
    assert context["earlier_handoff_count"] == 1
    assert context["earlier_handoffs"][0] | {"created_at": None} == {
        "handoff_id": previous.pk,
        "reason_code": "human_request",
        "reason": previous.reason,
        "status": "resolved",
        "outcome": "Refunded order A-1042 by hand.",
        "queue": "Support tier 2",
        "created_at": None,
    }
    assert context["last_contact"] is not None


def test_without_a_customer_id_the_context_says_why_it_is_empty(queues, chat_agent, actor, talk):
    anonymous = open_conversation(actor=actor, agent=chat_agent, channel="web_chat")

    handoff = handoff_of(talk(anonymous, "I want to speak to a human"))

    assert handoff.account_context["known_customer"] is False
    assert "names no customer id" in handoff.account_context["note"]


def test_without_queues_the_handoff_is_unqueued_but_due(conversation, talk):
    turn = talk(conversation, "I want to speak to a human")

    handoff = handoff_of(turn)
    assert handoff.queue is None
    assert handoff.due_at - handoff.created_at == pytest.approx(timedelta(minutes=60), abs=timedelta(seconds=5))
    assert turn.steps.get(kind=StepKind.HANDOFF).summary == "handed off: human_request (no queue takes it)"


def test_the_transcript_is_bounded(queues, chat_agent, conversation, talk, model_server):
    chat_agent.escalate_after_fallbacks = 0
    chat_agent.save()
    long = "Where is my parcel? " * 100
    for _ in range(handoff_package.TRANSCRIPT_TURNS + 1):
        model_server.enqueue(reply("Not sure."))
        talk(conversation, long)

    turn = talk(conversation, "I want to speak to a human")

    transcript = handoff_of(turn).transcript
    assert len(transcript) == handoff_package.TRANSCRIPT_TURNS
    assert transcript[-1]["turn"] == turn.number
    assert len(transcript[0]["customer"]) == handoff_package.TRANSCRIPT_CHARS
    assert transcript[0]["customer"].endswith("…")


def test_a_handoff_the_model_makes_with_the_tool_gets_the_package_too(
    queues, tenant, chat_agent, conversation, talk, model_server
):
    tool = builtin_tool(tenant, "handoff.create", builtin="handoff.create", description="Hand over to a human")
    grant(tool, "support_agent")
    allow(chat_agent, tool)
    arguments = {"reason_code": "refund_exception", "reason": "Refund outside the policy window needs a person."}
    model_server.enqueue(tool_calls(call("handoff__create", arguments)), reply("A colleague will take over."))

    turn = talk(conversation, "My blender broke after 40 days, can you help?")

    handoff = Handoff.objects.get(turn_id=str(turn.pk))
    assert (handoff.reason_code, handoff.reason) == (arguments["reason_code"], arguments["reason"])
    assert handoff.customer == CUSTOMER
    assert handoff.transcript[-1]["customer"] == "My blender broke after 40 days, can you help?"
    assert handoff.account_context["known_customer"] is True
    assert handoff.sentiment["label"] == "neutral"
    assert handoff.queue == queues["tier2"]
