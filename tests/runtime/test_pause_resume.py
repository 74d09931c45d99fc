"""Durable pause and resume: a call that needs approval parks the turn; the person's
decision resumes it where it stopped. And a turn whose worker died is taken over from its
last checkpoint without running a tool twice."""

import json
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from apps.agents import services as agents
from apps.approvals import services as approvals
from apps.approvals.choices import ApprovalStatus
from apps.approvals.models import ApprovalRequest
from apps.runtime import engine
from apps.runtime.choices import Decision, StepKind, TurnStatus
from apps.runtime.models import Turn
from apps.tools.choices import Outcome, RiskTier
from apps.tools.models import ToolCall
from tests.model_server import call, reply, tool_calls
from tests.tools.conftest import counting_tool
from tests.tools.factories import allow, grant

pytestmark = pytest.mark.django_db


@pytest.fixture
def refund_tool(tenant, chat_agent, executions):
    tool = counting_tool(tenant, "refund.issue", description="Refund an order", risk_tier=RiskTier.HIGH)
    grant(tool, "support_agent")
    grant(tool, "support_lead", may_approve=True)
    allow(chat_agent, tool)
    return tool


@pytest.fixture
def paused_turn(conversation, talk, model_server, refund_tool):
    model_server.enqueue(
        tool_calls(
            call("refund__issue", {"note": "damaged", "amount": 20}, id="call_r"),
            content="The order arrived damaged, so I am asking for a refund.",
        )
    )
    turn = talk(conversation, "Please refund my damaged order")
    assert turn.status == TurnStatus.WAITING_APPROVAL
    return turn


def decide(django_capture_on_commit_callbacks, request, by, *, approve, comment=""):
    with django_capture_on_commit_callbacks(execute=True):
        approvals.decide(request.pk, by=by, approve=approve, comment=comment)
    return Turn.objects.get(pk=request.turn_id)


def test_a_call_needing_approval_parks_the_turn_with_what_it_needs(paused_turn, executions, model_server):
    request = ApprovalRequest.objects.get(turn_id=str(paused_turn.pk))
    assert request.status == ApprovalStatus.PENDING
    assert executions == []
    assert paused_turn.state["pending"][0]["approval_request_id"] == request.pk
    assert paused_turn.steps.last().kind == StepKind.PAUSE
    assert "approval" in paused_turn.output
    assert len(model_server.requests) == 1
    # The approver reads the conversation and the agent's own words for the call.
    assert request.context["conversation"][-1] == {"from": "customer", "text": "Please refund my damaged order"}
    assert request.context["agent_reason"] == "The order arrived damaged, so I am asking for a refund."


def test_approval_resumes_the_turn_runs_the_call_once_and_the_model_sees_the_result(
    paused_turn, people, executions, model_server, django_capture_on_commit_callbacks
):
    model_server.enqueue(reply("Your refund is on its way."))
    request = ApprovalRequest.objects.get(turn_id=str(paused_turn.pk))

    turn = decide(django_capture_on_commit_callbacks, request, people["support_lead"], approve=True)

    assert turn.status == TurnStatus.COMPLETED
    assert (turn.decision, turn.decision_reason) == (Decision.ANSWER, "tool_result")
    assert len(executions) == 1
    tool_message = model_server.requests[1]["messages"][-1]
    assert tool_message["tool_call_id"] == "call_r"
    assert json.loads(tool_message["content"])["status"] == Outcome.EXECUTED
    assert turn.state is None  # a finished turn keeps its trace, not its working state
    assert [step.kind for step in turn.steps.all()][-4:] == [
        StepKind.PAUSE,
        StepKind.RESUME,
        StepKind.MODEL_CALL,
        StepKind.DECISION,
    ]
    # A second resume (a redelivered task) finds nothing to do.
    assert engine.resume(turn.pk) == TurnStatus.COMPLETED
    assert len(executions) == 1


def test_rejection_reaches_the_model_and_nothing_runs(
    paused_turn, people, executions, model_server, django_capture_on_commit_callbacks
):
    model_server.enqueue(reply("The refund was not approved; a colleague will contact you."))
    request = ApprovalRequest.objects.get(turn_id=str(paused_turn.pk))

    turn = decide(
        django_capture_on_commit_callbacks, request, people["support_lead"], approve=False, comment="Outside policy"
    )

    assert executions == []
    told = json.loads(model_server.requests[1]["messages"][-1]["content"])
    assert told["status"] == ApprovalStatus.REJECTED
    assert "rejected" in told["message"] and "Outside policy" in told["message"]
    assert turn.status == TurnStatus.COMPLETED


def test_expiry_reaches_the_model_and_nothing_runs(
    paused_turn, executions, model_server, django_capture_on_commit_callbacks
):
    model_server.enqueue(reply("Nobody could approve the refund in time; a colleague will follow up."))
    request = ApprovalRequest.objects.get(turn_id=str(paused_turn.pk))
    ApprovalRequest.objects.filter(pk=request.pk).update(
        due_at=timezone.now() - timedelta(hours=2), expires_at=timezone.now() - timedelta(minutes=1)
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert approvals.expire_overdue() == 1

    assert executions == []
    told = json.loads(model_server.requests[1]["messages"][-1]["content"])
    assert told["status"] == ApprovalStatus.EXPIRED and "expired" in told["message"]
    assert Turn.objects.get(pk=paused_turn.pk).status == TurnStatus.COMPLETED


def test_nobody_decides_their_own_request_and_a_rejection_needs_a_reason(paused_turn, people, actor):
    request = ApprovalRequest.objects.get(turn_id=str(paused_turn.pk))
    with pytest.raises(PermissionDenied):
        approvals.decide(request.pk, by=actor, approve=True)
    with pytest.raises(PermissionDenied):
        approvals.decide(request.pk, by=people["knowledge_owner"], approve=True)
    with pytest.raises(ValidationError):
        approvals.decide(request.pk, by=people["support_lead"], approve=False, comment="  ")
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING


def test_an_approval_for_a_suspended_agent_does_not_execute(
    paused_turn, people, chat_agent, executions, model_server, django_capture_on_commit_callbacks
):
    agents.suspend_agent(agent=chat_agent, by=people["security"], reason="Investigating refunds")
    request = ApprovalRequest.objects.get(turn_id=str(paused_turn.pk))

    turn = decide(django_capture_on_commit_callbacks, request, people["support_lead"], approve=True)

    assert executions == []
    assert ToolCall.objects.get(approval_request_id=request.pk).outcome == Outcome.DENIED
    assert turn.status == TurnStatus.REFUSED  # the turn stops before another model call
    assert "suspended" in turn.output
    assert len(model_server.requests) == 1


def test_a_turn_whose_worker_died_is_taken_over_without_running_a_tool_twice(
    tenant, chat_agent, conversation, model_server, executions, monkeypatch, django_capture_on_commit_callbacks
):
    tool = counting_tool(tenant, "orders.touch", description="Touch an order")
    grant(tool, "support_agent")
    allow(chat_agent, tool)
    model_server.enqueue(tool_calls(call("orders__touch", {"note": "once"}, id="call_1")), reply("Done."))

    class WorkerDied(BaseException):
        """Stands in for SIGKILL: not an Exception, so nothing in the turn catches it."""

    original_step = engine._step

    def die_after_the_tool_ran(run_, kind, *args, **kwargs):
        step = original_step(run_, kind, *args, **kwargs)
        if kind == StepKind.TOOL_CALL:
            raise WorkerDied
        return step

    from apps.runtime import services

    turn = services.submit_turn(conversation=conversation, actor=conversation.actor, text="Touch my order")
    monkeypatch.setattr(engine, "_step", die_after_the_tool_ran)
    with pytest.raises(WorkerDied):
        engine.run(turn.pk)
    monkeypatch.setattr(engine, "_step", original_step)
    assert len(executions) == 1
    assert engine.run(turn.pk) == "busy"  # its lease has not lapsed: nobody else takes it yet

    Turn.objects.filter(pk=turn.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert [str(turn.pk)] == engine.stale_turn_ids()
    assert engine.run(turn.pk) == TurnStatus.COMPLETED

    turn.refresh_from_db()
    assert len(executions) == 1  # the repeated call was answered from the gateway's record
    assert turn.attempts == 2
    replayed = [step.detail.get("replayed") for step in turn.steps.filter(kind=StepKind.TOOL_CALL)]
    assert replayed == [False, True]
    assert turn.decision == Decision.ANSWER


def test_a_turn_interrupted_too_often_is_failed_with_its_reason(conversation, settings):
    from apps.runtime import services

    turn = services.submit_turn(conversation=conversation, actor=conversation.actor, text="Hello")
    Turn.objects.filter(pk=turn.pk).update(
        status=TurnStatus.RUNNING,
        attempts=settings.TURN_MAX_ATTEMPTS,
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )

    assert engine.run(turn.pk) == TurnStatus.FAILED
    turn.refresh_from_db()
    assert "interrupted" in turn.error
    assert turn.steps.last().kind == StepKind.ERROR
