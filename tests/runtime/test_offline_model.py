"""The offline model: the embedded default answers without any model provider, only by
quoting approved sources or proposing a tool the message clearly asks for, and says so."""

import pytest

from apps.runtime.choices import Decision, StepKind, TurnStatus
from apps.runtime.llm import OFFLINE_LABEL, ModelRequest, OfferedTool, OfflineModel
from apps.runtime.services import open_conversation
from tests.knowledge.factories import source
from tests.tools.conftest import counting_tool
from tests.tools.factories import allow, grant

pytestmark = pytest.mark.django_db

LOOKUP_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "pattern": "^[A-Z]-[0-9]{4}$"}},
    "required": ["order_id"],
    "additionalProperties": False,
}


@pytest.fixture
def offline_conversation(agent, actor):
    agent.channels = ["web_chat"]
    agent.save()
    return open_conversation(actor=actor, agent=agent, channel="web_chat", subject="C-1001", subject_verified=True)


def test_it_quotes_the_best_approved_passage_with_its_source(offline_conversation, talk, tenant, people):
    policy = source(
        tenant,
        people["knowledge_owner"],
        title="Refund policy",
        body="Refunds are accepted within 30 days of delivery for unused items.",
        visibility="public",
    )

    turn = talk(offline_conversation, "Within how many days are refunds accepted?")

    assert (turn.decision, turn.decision_reason) == (Decision.ANSWER, "grounded")
    assert turn.offline and turn.model == "offline model"
    assert turn.output.startswith(OFFLINE_LABEL)
    assert "Refunds are accepted within 30 days" in turn.output and "“Refund policy”" in turn.output
    model_step = turn.steps.get(kind=StepKind.MODEL_CALL)
    assert model_step.detail["offline"] and model_step.detail["note"] == OFFLINE_LABEL
    assert turn.steps.get(kind=StepKind.DECISION).detail["cited"][0]["source_id"] == policy.pk


def test_without_a_source_it_falls_back_and_says_it_is_offline(offline_conversation, talk):
    turn = talk(offline_conversation, "What is the warranty on blenders?")

    assert (turn.decision, turn.decision_reason) == (Decision.FALLBACK, "knowledge_gap")
    assert turn.output.startswith(OFFLINE_LABEL)


def test_it_proposes_a_tool_the_message_clearly_asks_for_and_reports_its_result(
    offline_conversation, talk, tenant, agent, executions
):
    lookup = counting_tool(
        tenant, "order.lookup", description="Look up one order by its number", argument_schema=LOOKUP_SCHEMA
    )
    grant(lookup, "support_agent")
    allow(agent, lookup)

    turn = talk(offline_conversation, "Can you look up order A-1042 for me?")

    assert turn.status == TurnStatus.COMPLETED
    assert [invocation.arguments for invocation in executions] == [{"order_id": "A-1042"}]
    assert (turn.decision, turn.decision_reason) == (Decision.ANSWER, "tool_result")
    assert turn.output.startswith(OFFLINE_LABEL) and "executed" in turn.output


def test_it_proposes_no_tool_when_a_required_argument_is_missing_or_ambiguous():
    tool = OfferedTool("order.lookup", "order__lookup", "Look up one order by its number", LOOKUP_SCHEMA, "low")
    model = OfflineModel()

    def asks(question: str) -> list:
        request = ModelRequest(messages=[{"role": "user", "content": question}], tools=[tool], question=question)
        return model.complete(request).tool_calls

    assert asks("Look up order A-1042") != []
    assert asks("Look up my order please") == []  # no order number
    assert asks("Look up order A-1042 and order B-2000") == []  # which one?
    assert asks("What is A-1042?") == []  # the words do not name the tool
