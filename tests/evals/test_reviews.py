"""People's reviews of real turns (shadow comparison, suggestions, post-hoc), and incident ->
case: a real turn becomes a regression case pre-filled from its trace, which then runs."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from apps.agents.choices import RolloutMode
from apps.evals import services
from apps.evals.choices import Category, ResultStatus, ReviewKind
from apps.evals.models import TurnReview
from apps.runtime.choices import Decision, StepKind, TurnStatus
from apps.runtime.models import Conversation, Step, Turn
from apps.runtime.services import open_conversation
from tests.audit.helpers import chained
from tests.model_server import call, reply, tool_calls
from tests.tools.conftest import counting_tool
from tests.tools.factories import allow, grant


@pytest.fixture
def lead(people):
    return people["support_lead"]


def finished_turn(agent, actor, *, number=1, tool=None, decision=Decision.ANSWER, conversation=None) -> Turn:
    """A finished production turn whose trace proposes ``tool`` (if any), as the engine writes it."""
    conversation = conversation or Conversation.objects.create(
        tenant=agent.tenant, agent=agent, actor=actor, channel="web_chat"
    )
    turn = Turn.objects.create(
        conversation=conversation,
        tenant=agent.tenant,
        agent=agent,
        actor=actor,
        number=number,
        input="?",
        status=TurnStatus.COMPLETED,
        decision=decision,
        model=services.model_labels(agent)[0],
        rollout_mode=RolloutMode.SHADOW,
    )
    if tool:
        Step.objects.create(
            turn=turn, number=1, kind=StepKind.TOOL_CALL, summary=tool, detail={"tool": tool, "outcome": "proposed"}
        )
    return turn


def test_a_shadow_proposal_recorded_beside_what_the_person_did(
    agent,
    lead,
    tenant,
    executions,
    model_server,
    provider,
    talk,
):
    agent.model_provider, agent.model_name, agent.rollout_mode = provider, "large-model", RolloutMode.SHADOW
    agent.save()
    refund = counting_tool(tenant, "refund.issue", description="Issue a refund")
    allow(agent, refund)
    grant(refund, "support_lead")
    model_server.enqueue(tool_calls(call("refund__issue", {"note": "A-1"})), reply("I would refund A-1."))
    conversation = open_conversation(actor=lead, agent=agent, channel="web_chat")
    turn = talk(conversation, "Refund order A-1 please")
    assert (turn.rollout_mode, executions) == (RolloutMode.SHADOW, [])

    review = services.record_review(by=lead, turn=turn, kind=ReviewKind.SHADOW, human_action="refund.issue")

    assert (review.agent_action, review.human_action, review.agreed) == ("refund.issue", "refund.issue", True)
    assert (review.prompt_version, review.model) == (turn.prompt_version, "Scripted / large-model")
    again = services.record_review(by=lead, turn=turn, kind=ReviewKind.SHADOW, human_action="escalate", note="VIP")
    assert (again.pk, again.agreed, again.note) == (review.pk, False, "VIP")  # replaced, not added
    assert [row.human_action for row in again.history.order_by("history_id")] == ["refund.issue", "escalate"]
    assert [event.data["outcome"] for event in chained(event_type="turn.reviewed").order_by("pk")] == [
        "agreed",
        "disagreed",
    ]


def test_agreement_per_action_class_counts_only_the_current_prompt_and_model(agent, lead, owner):
    from apps.agents.services import publish_prompt

    publish_prompt(agent=agent, text="v1", author=owner)
    agent.refresh_from_db()
    decisions = [("refund.issue", "refund.issue")] * 3 + [("refund.issue", "escalate"), ("answer", "answer")] * 2
    for _number, (proposed, did) in enumerate(decisions, start=1):
        turn = finished_turn(agent, lead, tool=proposed if proposed != "answer" else None)
        turn.prompt_version = 1
        turn.save()
        services.record_review(by=lead, turn=turn, kind=ReviewKind.SHADOW, human_action=did)
    stale = finished_turn(agent, lead, tool="refund.issue")  # no prompt version: an earlier setup
    services.record_review(by=lead, turn=stale, kind=ReviewKind.SHADOW, human_action="escalate")

    overall, per_class = services.shadow_agreement(agent)

    assert (overall.compared, overall.agreed) == (7, 5)
    assert [(row.action, row.compared, row.agreed, str(row.rate)) for row in per_class] == [
        ("answer", 2, 2, "1.0000"),
        ("escalate", 2, 0, "0.0000"),
        ("refund.issue", 3, 3, "1.0000"),
    ]


def test_suggestion_and_post_hoc_reviews_need_their_answer(agent, lead):
    turn = finished_turn(agent, lead)
    with pytest.raises(ValidationError, match="Say whether the suggestion was taken"):
        services.record_review(by=lead, turn=turn, kind=ReviewKind.SUGGESTION)
    with pytest.raises(ValidationError, match="Say whether the agent was right"):
        services.record_review(by=lead, turn=turn, kind=ReviewKind.POST_HOC)
    with pytest.raises(ValidationError, match="Pick one of: answer, clarify"):
        services.record_review(by=lead, turn=turn, kind=ReviewKind.SHADOW, human_action="launch.rocket")
    services.record_review(by=lead, turn=turn, kind=ReviewKind.SUGGESTION, accepted=True)
    services.record_review(by=lead, turn=turn, kind=ReviewKind.POST_HOC, correct=False)
    assert services.review_metric(agent, "suggestion_acceptance")[1:] == (1, 1)
    assert services.review_metric(agent, "post_hoc_error")[1:] == (1, 1)


def test_who_may_review_and_what(agent, lead, people, other_agent):
    turn = finished_turn(agent, lead)
    for person in (people["nobody"], people["knowledge_owner"]):
        with pytest.raises(PermissionDenied):
            services.record_review(by=person, turn=turn, kind=ReviewKind.POST_HOC, correct=True)
    foreign = finished_turn(other_agent, other_agent.owner)
    with pytest.raises(PermissionDenied):
        services.record_review(by=lead, turn=foreign, kind=ReviewKind.POST_HOC, correct=True)
    running = finished_turn(agent, lead, number=2, conversation=turn.conversation)
    Turn.objects.filter(pk=running.pk).update(status=TurnStatus.RUNNING)
    with pytest.raises(ValidationError, match="once it has finished"):
        services.record_review(by=lead, turn=Turn.objects.get(pk=running.pk), kind=ReviewKind.POST_HOC, correct=True)
    Conversation.objects.filter(pk=turn.conversation_id).update(evaluation=True)
    with pytest.raises(ValidationError, match="scored by their case"):
        services.record_review(by=lead, turn=Turn.objects.get(pk=turn.pk), kind=ReviewKind.POST_HOC, correct=True)
    assert not TurnReview.objects.exists()
    services.record_review(by=people["support_agent"], turn=finished_turn(agent, lead), kind="post_hoc", correct=True)


# --- Incident -> case ----------------------------------------------------------------------


def test_an_incident_becomes_a_case_that_runs(suite, owner, agent, people, run, django_capture_on_commit_callbacks):
    from apps.runtime.services import submit_turn

    conversation = open_conversation(
        actor=people["support_agent"], agent=agent, channel="web_chat", subject="C-77", subject_verified=True
    )
    with django_capture_on_commit_callbacks(execute=True):
        incident = submit_turn(conversation=conversation, actor=people["support_agent"], text="I want a real person!")
    incident = Turn.objects.get(pk=incident.pk)
    assert incident.decision == Decision.ESCALATE

    draft = services.case_draft_from_turn(incident)
    assert (draft["input"], draft["channel"], draft["category"], draft["expected_decision"]) == (
        "I want a real person!",
        "web_chat",
        Category.ESCALATION,
        Decision.ESCALATE,
    )
    assert draft["subject"] == {"subject": "C-77", "subject_verified": True, "audience": "customer"}

    made = services.create_case_from_turn(by=owner, turn=incident, suite=suite, name="Asks for a person")
    assert (made.source_turn_id, made.created_by) == (incident.pk, owner)

    (result,) = run(suite).results.all()
    assert (result.case_id, result.status) == (made.pk, ResultStatus.PASSED)
    assert result.turn.conversation.subject == "C-77" and result.turn.input == incident.input

    agent.escalate_on_request = False  # the regression the case exists to catch
    agent.save()
    (again,) = run(suite).results.all()
    assert again.status == ResultStatus.FAILED


def test_an_incident_with_a_failed_tool_drafts_a_simulated_failure(agent, lead, suite, owner, other_tenant):
    turn = finished_turn(agent, lead, decision=Decision.FALLBACK)
    Step.objects.create(
        turn=turn,
        number=2,
        kind=StepKind.TOOL_CALL,
        summary="order.lookup: failed",
        detail={"tool": "order.lookup", "outcome": "failed", "message": "The order system timed out."},
    )
    draft = services.case_draft_from_turn(turn)
    assert draft["category"] == Category.TOOL_FAILURE
    assert draft["simulated_tool_results"] == {
        "order.lookup": {"status": "failed", "message": "The order system timed out."}
    }
    Conversation.objects.filter(pk=turn.conversation_id).update(evaluation=True)
    with pytest.raises(ValidationError, match="itself an evaluation"):
        services.create_case_from_turn(by=owner, turn=Turn.objects.get(pk=turn.pk), suite=suite)
