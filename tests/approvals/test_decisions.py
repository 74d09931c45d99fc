"""Who may decide a request, the two-approver threshold, rejection, expiry, and the action
bound to exactly what was approved."""

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from apps.approvals import services
from apps.approvals.choices import RISK_TIERS, ApprovalStatus
from apps.approvals.models import ApprovalDecision, ApprovalRequest
from apps.tools import services as tool_services
from apps.tools.choices import Outcome, RiskTier
from apps.tools.models import Grant, ToolCall
from tests.accounts.factories import member
from tests.audit.helpers import chained
from tests.tools.factories import grant

from .conftest import CONVERSATION, THRESHOLD

pytestmark = pytest.mark.django_db


def call_of(request) -> ToolCall:
    return ToolCall.objects.get(approval_request_id=request.pk)


def test_the_risk_tiers_the_queue_filters_on_are_the_tools_tiers():
    assert tuple(RiskTier.values) == RISK_TIERS


def test_a_request_carries_what_the_approver_needs(ask, agent, people, settings):
    request = ask(amount=40)

    assert request.status == ApprovalStatus.PENDING
    assert (request.tool_name, request.risk_tier, request.amount) == ("refund.issue", "high", Decimal("40.00"))
    assert (request.subject, request.subject_verified, request.agent_id) == ("cust-42", True, agent.pk)
    assert request.requested_by == people["support_agent"]
    assert request.rule == "risk_tier" and "high" in request.rule_text
    assert request.context == CONVERSATION
    assert request.approvals_required == 1
    assert request.due_at - request.created_at == pytest.approx(
        datetime.timedelta(minutes=settings.APPROVAL_SLA_MINUTES), abs=datetime.timedelta(seconds=5)
    )
    assert request.expires_at - request.due_at == datetime.timedelta(minutes=settings.APPROVAL_GRACE_MINUTES)


def test_the_tools_own_sla_sets_when_a_request_is_due(ask, refund_tool):
    refund_tool.approval_sla_minutes = 5
    refund_tool.save()
    request = ask()
    assert request.due_at - request.created_at < datetime.timedelta(minutes=5, seconds=5)


def test_personal_data_in_the_approval_context_is_redacted(ask):
    context = {**CONVERSATION, "conversation": [{"from": "customer", "text": "Mail me at jane.doe@example.com"}]}
    request = ask(context=context)
    assert "jane.doe@example.com" not in str(request.context)
    assert "[EMAIL]" in request.context["conversation"][0]["text"]


# --- Who may decide -------------------------------------------------------------------------


def test_a_lead_whose_grant_allows_approving_approves_and_the_action_runs_once(ask, lead, decide, executions):
    request = decide(ask(), lead, comment="Damaged on arrival, fine.")

    assert request.status == ApprovalStatus.EXECUTED
    assert len(executions) == 1
    assert executions[0].arguments == {"amount": 40, "note": "damaged"}
    assert request.result == {"ran": 1}
    decision = ApprovalDecision.objects.get(request=request)
    assert (decision.approver, decision.approve, decision.approver_roles) == (lead, True, ["support_lead"])
    event = chained(event_type="approval.decided").get()
    assert (event.approver_id, event.data["approval_status"]) == (lead.pk, ApprovalStatus.APPROVED)
    assert chained(event_type="tool.executed").count() == 1


def test_nobody_approves_a_request_made_on_their_own_behalf(ask, tenant, people, executions):
    # The support agent is also a lead here: the approvals permission and the grant both hold.
    requester = people["support_agent"]
    member(tenant, "support_lead", username=requester.username)
    request = ask(user=requester)
    requester.refresh_from_db()

    with pytest.raises(PermissionDenied, match="somebody else must decide"):
        services.decide(request.pk, by=requester, approve=True)

    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.PENDING
    assert not ApprovalDecision.objects.exists() and not executions


@pytest.mark.parametrize("kind", ["admin", "compliance", "support_agent", "knowledge_owner", "nobody"])
def test_people_without_an_approving_grant_are_refused(ask, people, kind, executions):
    """Admin holds every approvals permission but no grant that allows approving refunds;
    compliance may read requests but not decide them; the others may do neither."""
    request = ask()
    with pytest.raises(PermissionDenied):
        services.decide(request.pk, by=people[kind], approve=True)
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.PENDING
    assert not executions


def test_a_superuser_without_an_approving_role_is_refused_too(ask, superuser):
    with pytest.raises(PermissionDenied, match=r"grant that lets you approve refund\.issue"):
        services.decide(ask().pk, by=superuser, approve=True)


def test_a_revoked_approving_grant_stops_its_holders_at_once(ask, lead, people, refund_tool):
    request = ask()
    held = Grant.objects.get(role__kind="support_lead", tool=refund_tool)
    tool_services.revoke_grant(grant=held, by=people["security"], reason="Leads stop approving refunds")

    with pytest.raises(PermissionDenied):
        services.decide(request.pk, by=lead, approve=True)


def test_a_lead_of_another_tenant_is_refused(ask, other_tenant):
    outsider = member(other_tenant, "support_lead", username="globex.lead")
    with pytest.raises(PermissionDenied, match="may not decide approval requests"):
        services.decide(ask().pk, by=outsider, approve=True)


def test_an_approving_grant_for_another_tool_does_not_count(ask, tenant, people, executions):
    from tests.tools.conftest import counting_tool

    other_tool = counting_tool(tenant, "customer.email", risk_tier=RiskTier.HIGH)
    grant(other_tool, "admin", may_approve=True)
    with pytest.raises(PermissionDenied):
        services.decide(ask().pk, by=people["admin"], approve=True)


# --- Rejection -------------------------------------------------------------------------------


def test_a_rejection_needs_a_reason_and_closes_the_call(ask, lead, decide, executions):
    request = ask()
    with pytest.raises(ValidationError, match="Say why"):
        services.decide(request.pk, by=lead, approve=False, comment="   ")
    assert not ApprovalDecision.objects.exists()

    request = decide(request, lead, approve=False, comment="Outside the refund window")

    assert (request.status, request.outcome_note) == (ApprovalStatus.REJECTED, "Outside the refund window")
    call = call_of(request)
    assert (call.outcome, call.reason_code, call.pending_arguments) == (Outcome.DENIED, "approval_rejected", None)
    assert "Outside the refund window" in call.reason
    assert not executions
    with pytest.raises(ValidationError, match="rejected"):
        services.decide(request.pk, by=lead, approve=True)


# --- Two approvers above the threshold -------------------------------------------------------


def test_above_the_threshold_two_different_people_must_approve(ask, lead, second_lead, decide, executions):
    request = ask(amount=float(THRESHOLD) + 250)
    assert request.approvals_required == 2

    request = decide(request, lead, comment="Checked the order")
    assert request.status == ApprovalStatus.PENDING and not executions
    with pytest.raises(ValidationError, match="different person"):
        services.decide(request.pk, by=lead, approve=True)
    assert ApprovalDecision.objects.filter(request=request).count() == 1

    request = decide(request, second_lead)

    assert request.status == ApprovalStatus.EXECUTED
    assert len(executions) == 1
    assert chained(event_type="approval.decided").count() == 2


def test_at_the_threshold_one_approval_is_enough(ask, lead, decide, executions):
    request = ask(amount=float(THRESHOLD))
    assert request.approvals_required == 1
    assert decide(request, lead).status == ApprovalStatus.EXECUTED


def test_one_rejection_after_a_first_approval_closes_the_request(ask, lead, second_lead, decide, executions):
    request = decide(ask(amount=900), lead)
    request = decide(request, second_lead, approve=False, comment="Too large without a manager")
    assert request.status == ApprovalStatus.REJECTED
    assert not executions


# --- Expiry ----------------------------------------------------------------------------------


def age(request, minutes_past_expiry: float) -> ApprovalRequest:
    """Move a request's clock back so it expired ``minutes_past_expiry`` ago (negative: not yet)."""
    shift = (request.expires_at - timezone.now()) + datetime.timedelta(minutes=minutes_past_expiry)
    ApprovalRequest.objects.filter(pk=request.pk).update(
        created_at=request.created_at - shift,
        due_at=request.due_at - shift,
        expires_at=request.expires_at - shift,
    )
    return ApprovalRequest.objects.get(pk=request.pk)


def test_an_overdue_request_in_its_grace_period_can_still_be_decided(ask, lead, decide, settings, executions):
    request = age(ask(), -settings.APPROVAL_GRACE_MINUTES / 2)
    assert request.due_at < timezone.now() < request.expires_at
    assert decide(request, lead).status == ApprovalStatus.EXECUTED


def test_the_sweep_expires_requests_past_their_grace_period_and_closes_their_calls(
    ask, django_capture_on_commit_callbacks, executions
):
    expired, waiting = age(ask(), 1), ask(subject="cust-43")

    with django_capture_on_commit_callbacks(execute=True):
        assert services.expire_overdue() == 1

    expired.refresh_from_db()
    assert expired.status == ApprovalStatus.EXPIRED and "Nobody decided it" in expired.outcome_note
    assert ApprovalRequest.objects.get(pk=waiting.pk).status == ApprovalStatus.PENDING
    call = call_of(expired)
    assert (call.outcome, call.reason_code, call.pending_arguments) == (Outcome.DENIED, "approval_expired", None)
    assert chained(event_type="approval.expired").get().data["payload"]["approval_request_id"] == expired.pk
    assert services.expire_overdue() == 0  # idempotent
    assert not executions


def test_deciding_after_expiry_is_refused_and_the_expiry_stays(ask, lead, executions):
    request = age(ask(), 1)
    with pytest.raises(ValidationError, match="expired"):
        services.decide(request.pk, by=lead, approve=True)
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.EXPIRED
    assert not ApprovalDecision.objects.exists() and not executions


# --- Bound to the exact action ---------------------------------------------------------------


def test_an_approval_is_single_use(ask, lead, decide, executions):
    from apps.tools.gateway import execute_approved

    request = decide(ask(), lead)
    again = execute_approved(request.pk)
    assert again.reason_code == "not_executable"
    assert len(executions) == 1


def test_a_changed_action_voids_the_approval(ask, lead, executions, django_capture_on_commit_callbacks):
    from apps.tools.gateway import execute_approved

    request = ask(amount=40)
    call = call_of(request)
    ToolCall.objects.filter(pk=call.pk).update(pending_arguments={"amount": 4000, "note": "damaged"})
    services.decide(request.pk, by=lead, approve=True)  # the execution is not run here
    result = execute_approved(request.pk)

    assert result.reason_code == "not_executable" and "differs" in result.message
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.VOIDED
    assert not executions


def test_the_beat_schedule_runs_the_expiry_sweep_by_a_task_that_exists(settings, ask):
    from apps.approvals.tasks import expire_overdue
    from controlplane.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["approvals-expire"]
    assert entry["task"] == expire_overdue.name and entry["task"] in app.tasks
    age(ask(), 1)
    assert expire_overdue.delay().get() == 1
