"""Fixtures for approvals: a high-risk refund tool (a counting built-in, so a test sees
whether it really ran) that support agents may ask for and support leads may approve,
two approvers, and ``ask`` to open a request through the gateway as a support agent."""

from decimal import Decimal

import pytest

from apps.agents.choices import RolloutMode
from apps.approvals import services
from apps.approvals.models import ApprovalRequest
from apps.tools.choices import Outcome, RiskTier
from apps.tools.gateway import invoke
from tests.accounts.factories import member
from tests.tools.conftest import counting_tool, executions, fresh_cache, register_builtin  # noqa: F401 — fixtures
from tests.tools.factories import allow, context_for, grant

THRESHOLD = Decimal("500.00")
CONVERSATION = {
    "conversation": [
        {"from": "customer", "text": "My blender arrived broken, order A-1001."},
        {"from": "agent", "text": "I'm sorry to hear that. I can ask for a refund of 40.00."},
    ],
    "agent_reason": "The order arrived damaged and is within the 30-day refund window [S1].",
    "sources": [{"source_id": 7, "title": "Refund policy"}],
}


@pytest.fixture(autouse=True)
def _empty_cache(fresh_cache):  # noqa: F811 — the imported fixture, used
    """Rate-limit counters live in the cache: each test starts with none."""


@pytest.fixture
def refund_tool(tenant, agent, executions):  # noqa: F811
    agent.rollout_mode = RolloutMode.APPROVAL  # irreversible writes go to a person
    agent.save()
    tool = counting_tool(
        tenant,
        "refund.issue",
        description="Refund an order",
        risk_tier=RiskTier.HIGH,
        writes=True,
        reversible=False,
        amount_field="amount",
        second_approver_above=THRESHOLD,
    )
    allow(agent, tool)
    grant(tool, "support_agent")
    grant(tool, "support_lead", may_approve=True)
    return tool


@pytest.fixture
def lead(people):
    return people["support_lead"]


@pytest.fixture
def second_lead(tenant):
    return member(tenant, "support_lead", username="second.lead")


@pytest.fixture
def ask(agent, people, refund_tool):
    """``ask(amount=40, subject="cust-42", verified=True, context=CONVERSATION)``: a support
    agent's agent asks for a refund (outside a turn); the pending ApprovalRequest."""

    def make(amount=40, subject="cust-42", verified=True, context=CONVERSATION, user=None, note="damaged"):
        turn_context = context_for(
            agent, user or people["support_agent"], channel="web_chat", subject=subject, subject_verified=verified
        )
        result = invoke(turn_context, "refund.issue", {"amount": amount, "note": note}, approval_context=context)
        assert result.outcome == Outcome.NEEDS_APPROVAL, result.message
        return ApprovalRequest.objects.get(pk=result.approval_request_id)

    return make


@pytest.fixture
def decide(django_capture_on_commit_callbacks):
    """``decide(request, by, approve=True, comment="")``: decide and run what follows the
    commit (the execution, in process), as the embedded default does; the fresh request."""

    def run(request, by, *, approve=True, comment=""):
        with django_capture_on_commit_callbacks(execute=True):
            services.decide(request.pk, by=by, approve=approve, comment=comment)
        return ApprovalRequest.objects.get(pk=request.pk)

    return run
