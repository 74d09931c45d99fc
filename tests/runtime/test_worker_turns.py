"""Turns on a real Celery worker process (the services suite): submitted, committed and run
elsewhere; paused for a person's approval and resumed by another task; and taken over from
their checkpoint when the worker process running them is killed, without running a tool
twice.

The scripted model server runs in this process; the worker reaches it over loopback. The
provider here takes any API key (none is read from the environment): the worker process
was started before this test's environment variables were set.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied

from apps.approvals import services as approvals
from apps.approvals.choices import ApprovalStatus
from apps.approvals.models import ApprovalRequest
from apps.handoffs.models import InternalTicket
from apps.runtime import llm, services
from apps.runtime.choices import FINISHED_STATUSES, Decision, StepKind, TurnStatus
from apps.runtime.models import Turn
from apps.tools.choices import Outcome, RiskTier
from apps.tools.models import ToolCall
from tests.accounts.factories import member
from tests.knowledge.factories import source
from tests.model_server import call, delay, reply, tool_calls
from tests.tools.factories import allow, builtin_tool, grant

from .conftest import scripted_provider

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

TICKET_FUNCTION = "ticket__create"  # the function name the model sees for ticket.create
WORKER_LOG = Path(__file__).resolve().parents[2] / "var" / "celery-test-worker.log"


# --- Fixtures ------------------------------------------------------------------------------


@pytest.fixture
def provider(tenant, model_server):
    """The scripted provider, without an API key variable: the worker process does not have
    the test's TEST_MODEL_API_KEY (its environment was fixed when the session started). A
    timeout longer than the kill test's delayed answer, which keeps a model call open on purpose."""
    # The lease during a model call: 10 s + TURN_LEASE_SECONDS (3 s in the worker).
    return scripted_provider(tenant, model_server, api_key_env_var="", timeout_seconds=10)


@pytest.fixture
def ticket_tool(tenant, chat_agent):
    """``ticket_tool(risk_tier)``: the real ticket.create built-in (it runs on the worker and
    leaves an InternalTicket), granted to support agents (support leads may approve it) and on
    the agent's allowlist."""

    def make(risk_tier=RiskTier.LOW):
        tool = builtin_tool(
            tenant,
            "ticket.create",
            "ticket.create",
            description="Open an internal ticket for the support team",
            risk_tier=risk_tier,
            writes=True,
            reversible=True,  # assist mode runs only reversible tools
        )
        grant(tool, "support_agent")
        grant(tool, "support_lead", may_approve=True)
        allow(chat_agent, tool)
        return tool

    return make


@pytest.fixture
def lead(tenant):
    return member(tenant, "support_lead", username="lead.two")


# --- Helpers -------------------------------------------------------------------------------


def wait_for(predicate, *, timeout: float = 30, what: str = "the condition"):
    """Poll ``predicate`` every 0.2 s until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout} s waiting for {what}.\n{_log_tail()}")
        time.sleep(0.2)


def wait_for_turn(turn_id, statuses, *, timeout: float = 30) -> Turn:
    """The turn, read fresh, once its status is one of ``statuses``."""

    def reached():
        turn = Turn.objects.get(pk=turn_id)
        return turn if turn.status in statuses else None

    try:
        return wait_for(reached, timeout=timeout, what=f"turn {turn_id} to reach {', '.join(statuses)}")
    except AssertionError as timed_out:
        turn = Turn.objects.get(pk=turn_id)
        steps = list(turn.steps.values_list("kind", "summary"))
        raise AssertionError(f"{timed_out}\nturn is {turn.status}, attempts {turn.attempts}, steps {steps}") from None


def _log_tail(characters: int = 3000) -> str:
    if not WORKER_LOG.exists():
        return "(no worker log)"
    return f"worker log ({WORKER_LOG}), last lines:\n{WORKER_LOG.read_text(errors='replace')[-characters:]}"


def kinds(turn) -> list[str]:
    return list(turn.steps.order_by("number").values_list("kind", flat=True))


def submit(conversation, text: str) -> Turn:
    """Submit a turn as the API does: the transaction commits, then the task is sent."""
    turn = services.submit_turn(conversation=conversation, actor=conversation.actor, text=text)
    assert turn.status == TurnStatus.QUEUED
    return turn


def tool_message(request: dict) -> dict:
    message = request["messages"][-1]
    assert message["role"] == "tool", message
    return json.loads(message["content"])


def no_client_here(model_server) -> bool:
    """True when this process never built an SDK client for the server: the model requests
    it received came from another process."""
    return not any(key[0] == model_server.base_url for key in llm._clients)


def pool_children(worker_pid: int) -> set[int]:
    found = subprocess.run(  # noqa: S603 — fixed argument list, no shell
        ["/usr/bin/pgrep", "-P", str(worker_pid)], capture_output=True, text=True, check=False
    )
    return {int(pid) for pid in found.stdout.split()}


def worker_node(app) -> str:
    """The node name of this session's worker (the fixture names it after this process)."""
    prefix = f"test-worker-{os.getpid()}@"
    names = [name for answer in app.control.ping(timeout=1) for name in answer if name.startswith(prefix)]
    assert len(names) == 1, f"expected this session's one worker, found {names}"
    return names[0]


def process_running(app, node: str, task_name: str, turn_id) -> tuple[int, int]:
    """(the worker's main pid, the pid of its pool child running ``task_name`` for the turn).
    Asks only ``node`` and returns on its answer, so the kill follows within a fraction of a
    second, before the turn's lease lapses."""
    inspector = app.control.inspect(destination=[node], timeout=5, limit=1)

    def running():
        for task in (inspector.active() or {}).get(node, []):
            if task["name"] == task_name and str(turn_id) in json.dumps(task["args"]):
                return task["worker_pid"]
        return None

    child = wait_for(running, timeout=10, what=f"the worker to report {task_name} as active")
    main = (inspector.stats() or {})[node]["pid"]
    return main, child


# --- Tests ---------------------------------------------------------------------------------


def test_a_submitted_turn_runs_on_the_worker_after_the_commit(celery_worker, conversation, model_server, people):
    source(
        conversation.tenant,
        people["knowledge_owner"],
        title="Refund policy",
        body="Refunds are accepted within 30 days of delivery for unused items.",
        visibility="public",
    )
    model_server.enqueue(reply("You can return unused items within 30 days of delivery [S1]."))

    queued = submit(conversation, "Within how many days are refunds accepted?")
    turn = wait_for_turn(queued.pk, FINISHED_STATUSES)

    assert turn.status == TurnStatus.COMPLETED, turn.error
    assert (turn.decision, turn.decision_reason) == (Decision.ANSWER, "grounded")
    assert turn.output == "You can return unused items within 30 days of delivery [S1]."
    assert turn.attempts == 1 and turn.state is None
    assert turn.model == "Scripted / large-model" and not turn.offline
    assert kinds(turn) == [StepKind.GUARDRAIL_INPUT, StepKind.RETRIEVAL, StepKind.MODEL_CALL, StepKind.DECISION]
    assert len(model_server.requests) == 1
    assert model_server.requests[0]["messages"][-1] == {
        "role": "user",
        "content": "Within how many days are refunds accepted?",
    }
    assert no_client_here(model_server)  # the request came from the worker process


def test_a_paused_turn_resumes_on_the_worker_once_a_lead_approves(
    celery_worker, tenant, conversation, model_server, ticket_tool, actor, lead
):
    ticket_tool(RiskTier.HIGH)
    # The actor may decide approvals too, so refusing their own request is the rule that says no.
    actor_as_lead = member(tenant, "support_lead", username=actor.username)  # roles are cached per instance
    model_server.enqueue(
        tool_calls(call(TICKET_FUNCTION, {"title": "Replace broken router"}, id="call_1")),
        reply("I opened a ticket for the team to replace your router."),
    )

    queued = submit(conversation, "My router is broken, please open a ticket")
    waiting = wait_for_turn(queued.pk, (TurnStatus.WAITING_APPROVAL, *FINISHED_STATUSES))

    assert waiting.status == TurnStatus.WAITING_APPROVAL, waiting.error
    assert kinds(waiting)[-2:] == [StepKind.TOOL_CALL, StepKind.PAUSE]
    request = ApprovalRequest.objects.get(turn_id=str(waiting.pk))
    assert (request.status, request.tool_name, request.rule) == (ApprovalStatus.PENDING, "ticket.create", "risk_tier")
    assert not InternalTicket.objects.exists()
    assert len(model_server.requests) == 1

    with pytest.raises(PermissionDenied, match="somebody else must decide"):
        approvals.decide(request.pk, by=actor_as_lead, approve=True)
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.PENDING

    approvals.decide(request.pk, by=lead, approve=True, comment="Fine")
    turn = wait_for_turn(queued.pk, FINISHED_STATUSES)

    assert turn.status == TurnStatus.COMPLETED, turn.error
    assert (turn.decision, turn.decision_reason) == (Decision.ANSWER, "tool_result")
    assert turn.output == "I opened a ticket for the team to replace your router."
    ticket = InternalTicket.objects.get()
    assert ticket.title == "Replace broken router"
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.EXECUTED
    assert len(model_server.requests) == 2
    result = tool_message(model_server.requests[1])
    assert model_server.requests[1]["messages"][-1]["tool_call_id"] == "call_1"
    assert result["status"] == Outcome.EXECUTED and result["result"]["ticket_id"] == ticket.pk
    assert kinds(turn)[-4:] == [StepKind.PAUSE, StepKind.RESUME, StepKind.MODEL_CALL, StepKind.DECISION]
    assert no_client_here(model_server)


def test_a_rejection_reaches_the_model_through_the_worker(celery_worker, conversation, model_server, ticket_tool, lead):
    ticket_tool(RiskTier.HIGH)
    model_server.enqueue(
        tool_calls(call(TICKET_FUNCTION, {"title": "Replace broken router"}, id="call_1")),
        reply("A colleague declined to open that ticket. Is there anything else I can do?"),
    )

    queued = submit(conversation, "My router is broken, please open a ticket")
    waiting = wait_for_turn(queued.pk, (TurnStatus.WAITING_APPROVAL, *FINISHED_STATUSES))
    assert waiting.status == TurnStatus.WAITING_APPROVAL, waiting.error
    request = ApprovalRequest.objects.get(turn_id=str(waiting.pk), status=ApprovalStatus.PENDING)

    approvals.decide(request.pk, by=lead, approve=False, comment="Routers are replaced in the shop only.")
    turn = wait_for_turn(queued.pk, FINISHED_STATUSES)

    assert turn.status == TurnStatus.COMPLETED, turn.error
    assert not InternalTicket.objects.exists()
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.REJECTED
    assert len(model_server.requests) == 2
    result = tool_message(model_server.requests[1])
    assert result["status"] == ApprovalStatus.REJECTED
    assert result["message"] == (
        "A person rejected this action; it was not run. Routers are replaced in the shop only."
    )
    resumed = turn.steps.get(kind=StepKind.RESUME).detail["decided"]
    assert [(entry["approval"], entry["outcome"]) for entry in resumed] == [("rejected", "rejected")]


def test_a_worker_killed_mid_turn_never_runs_a_tool_twice(celery_worker, conversation, model_server, ticket_tool):
    ticket_tool(RiskTier.LOW)
    node = worker_node(celery_worker)
    model_server.enqueue(
        tool_calls(call(TICKET_FUNCTION, {"title": "Replace broken router"}, id="call_1")),
        delay(7, reply("Never delivered: the process that asked is killed first.")),
        reply("I opened a ticket for the team to replace your router."),
    )

    queued = submit(conversation, "My router is broken, please open a ticket")
    # The tool ran and its result is checkpointed; the worker now waits in the second model call.
    wait_for(
        lambda: (
            len(model_server.requests) >= 2 and Turn.objects.get(pk=queued.pk).steps.filter(kind=StepKind.TOOL_CALL)
        ),
        timeout=20,
        what="the tool call step and the second (delayed) model request",
    )
    assert InternalTicket.objects.count() == 1
    running = Turn.objects.get(pk=queued.pk)
    assert (running.status, running.attempts) == (TurnStatus.RUNNING, 1)
    assert running.state["queue"] == [] and running.state["messages"][-1]["role"] == "tool"

    worker_pid, child_pid = process_running(celery_worker, node, "runtime.run_turn", queued.pk)
    assert child_pid != worker_pid and child_pid in pool_children(worker_pid)
    os.kill(child_pid, signal.SIGKILL)

    turn = wait_for_turn(queued.pk, FINISHED_STATUSES)

    assert turn.status == TurnStatus.COMPLETED, turn.error
    assert turn.output == "I opened a ticket for the team to replace your router."
    assert turn.attempts == 2  # claimed by the killed process, then once by the takeover
    assert InternalTicket.objects.count() == 1
    assert ToolCall.objects.filter(turn_id=str(turn.pk), outcome=Outcome.EXECUTED).count() == 1
    # The takeover started from the checkpoint: no new first model call, the tool result resent.
    assert len(model_server.requests) == 3
    result = tool_message(model_server.requests[2])
    assert result["status"] == Outcome.EXECUTED and result["result"]["ticket_id"] == InternalTicket.objects.get().pk
    assert kinds(turn).count(StepKind.TOOL_CALL) == 1
    assert kinds(turn).count(StepKind.GUARDRAIL_INPUT) == 1
    os.kill(worker_pid, 0)  # the worker's main process is alive; prefork replaced the child
    wait_for(lambda: len(pool_children(worker_pid)) == 2, timeout=10, what="prefork to replace the killed child")
