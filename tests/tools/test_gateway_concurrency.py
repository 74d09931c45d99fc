"""The gateway under concurrent calls, on PostgreSQL and Redis: eight threads (each with its
own database connection) released at the same moment by a barrier. Whatever the timing,
an approved call runs once, one idempotency key runs once, and a per-minute limit lets
exactly its number through."""

from collections.abc import Callable

import pytest

from apps.agents.choices import RolloutMode
from apps.approvals.models import ApprovalRequest
from apps.tools.choices import Outcome, RiskTier
from apps.tools.gateway import execute_approved, invoke
from apps.tools.models import ToolCall

from ..audit.helpers import chained
from ..concurrency import all_at_once
from .conftest import counting_tool
from .factories import allow, context_for, grant

pytestmark = [
    pytest.mark.services,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fresh_cache"),
]

THREADS = 8


def at_once(call: Callable[[], object]) -> list:
    """Run ``call`` in THREADS threads released together; their results (none may raise)."""
    results = all_at_once([call] * THREADS)
    errors = [result for result in results if isinstance(result, Exception)]
    assert not errors, errors
    return results


@pytest.fixture
def agent(agent):
    agent.rollout_mode = RolloutMode.AUTONOMOUS
    agent.save()
    return agent


@pytest.fixture
def context(agent, people):
    return context_for(agent, people["support_agent"], channel="web_chat", subject="cust-42")


def granted_tool(tenant, agent, name, **fields):
    made = counting_tool(tenant, name, writes=True, **fields)
    allow(agent, made)
    grant(made, "support_agent")
    return made


def test_an_approved_call_runs_once_however_many_workers_race_for_it(tenant, agent, context, executions):
    granted_tool(tenant, agent, "orders.refund", risk_tier=RiskTier.HIGH, reversible=False)
    waiting = invoke(context, "orders.refund", {"amount": 40})
    assert waiting.outcome == Outcome.NEEDS_APPROVAL
    ApprovalRequest.objects.filter(pk=waiting.approval_request_id).update(status="approved")

    results = at_once(lambda: execute_approved(waiting.approval_request_id))

    assert sorted(result.outcome for result in results) == [Outcome.EXECUTED] + [Outcome.FAILED] * (THREADS - 1)
    assert {result.reason_code for result in results if not result.executed} == {"not_executable"}
    assert len(executions) == 1
    assert chained(event_type="tool.executed").count() == 1
    assert ApprovalRequest.objects.get(pk=waiting.approval_request_id).status == "executed"
    assert ToolCall.objects.get(pk=waiting.call_id).outcome == Outcome.EXECUTED


def test_one_idempotency_key_runs_once_however_many_deliveries_race(tenant, agent, context, executions):
    granted_tool(tenant, agent, "orders.touch")

    results = at_once(lambda: invoke(context, "orders.touch", {"note": "x"}, idempotency_key="model-call-1"))

    assert len(executions) == 1
    assert ToolCall.objects.count() == 1
    assert [result.replayed for result in results].count(False) == 1
    # A repeat sees the first call finished (executed) or still running (failed, not re-run).
    assert {result.outcome for result in results} <= {Outcome.EXECUTED, Outcome.FAILED}
    assert {result.call_id for result in results} == {ToolCall.objects.get().pk}
    assert chained(event_type="tool.executed").count() == 1


def test_one_idempotency_key_opens_one_approval_however_many_deliveries_race(tenant, agent, context, executions):
    granted_tool(tenant, agent, "orders.refund", risk_tier=RiskTier.HIGH, reversible=False)

    results = at_once(lambda: invoke(context, "orders.refund", {"amount": 40}, idempotency_key="model-call-1"))

    assert {result.outcome for result in results} == {Outcome.NEEDS_APPROVAL}
    assert ApprovalRequest.objects.count() == 1
    assert {result.approval_request_id for result in results} == {ApprovalRequest.objects.get().pk}
    assert chained(event_type="approval.requested").count() == 1
    assert executions == []


@pytest.mark.usefixtures("frozen_now")
def test_a_per_minute_limit_lets_exactly_its_number_through(tenant, agent, context, executions):
    granted_tool(tenant, agent, "orders.touch", per_user_per_minute=3)

    results = at_once(lambda: invoke(context, "orders.touch", {}))

    assert sorted(result.outcome for result in results) == [Outcome.DENIED] * (THREADS - 3) + [Outcome.EXECUTED] * 3
    assert {result.reason_code for result in results if not result.executed} == {"rate_limited"}
    assert len(executions) == 3
