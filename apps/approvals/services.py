"""Approval requests: opened by the tool gateway, decided by people (the decision pages,
quorum and expiry arrive with the human-in-the-loop issue), executed once.

``begin_execution`` is the single-use gate: it locks the request, checks it is approved
and bound to the very action about to run, and moves it to executing in one transaction,
so two workers (or two approvers clicking at once) cannot both get past it.
"""

import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from apps import audit
from apps.accounts.governance import require_tenant_permission
from controlplane.celery import enqueue_on_commit

from .choices import ApprovalStatus
from .models import ApprovalRequest


class NotExecutable(Exception):
    """The request may not run its action; ``message`` says why, ``voided`` whether this
    refusal voided it (the action differed from the one approved)."""

    def __init__(self, message: str, *, voided: bool = False):
        super().__init__(message)
        self.message = message
        self.voided = voided


def open_request(
    *,
    tenant_id: int,
    agent_id: int | None,
    tool_call_id,
    tool_name: str,
    risk_tier: str,
    amount: Decimal | None,
    arguments: dict,
    action_digest: str,
    requested_by_id: int,
    subject: str,
    subject_verified: bool,
    channel: str,
    conversation_id: str,
    turn_id: str,
    rule: str,
    rule_text: str,
    actor_roles=(),
) -> ApprovalRequest:
    """Open a request (in the caller's transaction) and audit it. ``arguments`` are
    already redacted: the request shows people what the action is, not secrets."""
    request = ApprovalRequest.objects.create(
        tenant_id=tenant_id,
        agent_id=agent_id,
        tool_call_id=tool_call_id,
        tool_name=tool_name,
        risk_tier=risk_tier,
        amount=amount,
        arguments=arguments,
        action_digest=action_digest,
        requested_by_id=requested_by_id,
        subject=subject,
        subject_verified=subject_verified,
        channel=channel,
        conversation_id=conversation_id,
        turn_id=turn_id,
        rule=rule,
        rule_text=rule_text,
        due_at=timezone.now() + datetime.timedelta(minutes=settings.APPROVAL_SLA_MINUTES),
    )
    audit.record(
        audit.EventType.APPROVAL_REQUESTED,
        tenant=tenant_id,
        actor=requested_by_id,
        actor_roles=actor_roles,
        agent=agent_id,
        conversation_id=conversation_id or None,
        turn_id=turn_id or None,
        tool=tool_name,
        arguments=arguments,
        approval_status=ApprovalStatus.PENDING,
        reason=rule,
        payload={"approval_request_id": request.pk, "tool_call_id": str(tool_call_id), "risk_tier": risk_tier},
    )
    return request


@transaction.atomic
def decide(request_id: int, *, by, approve: bool, comment: str = "") -> ApprovalRequest:
    """Approve or reject a pending request. The approver needs the approvals permission in
    the request's tenant and may not be the person the agent acted for; a rejection says
    why. After the commit the paused turn is resumed (it runs the approved call, once, or
    tells the model it was rejected); a request made outside a turn is executed directly."""
    request = ApprovalRequest.objects.select_for_update().get(pk=request_id)
    require_tenant_permission(
        by, request.tenant_id, "approvals.change_approvalrequest", "You may not decide approval requests here."
    )
    if request.requested_by_id == by.pk:
        raise PermissionDenied("Nobody may decide a request made on their own behalf.")
    if request.status != ApprovalStatus.PENDING:
        raise ValidationError(f"This request is {request.get_status_display().lower()}; it can no longer be decided.")
    comment = (comment or "").strip()
    if not approve and not comment:
        raise ValidationError({"comment": "Say why you reject it: the agent and the customer are told."})
    request.status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
    request.decided_at = timezone.now()
    request.outcome_note = comment
    request.save(update_fields=["status", "decided_at", "outcome_note"])
    audit.record(
        audit.EventType.APPROVAL_DECIDED,
        tenant=request.tenant_id,
        actor=by,
        approver=by,
        agent=request.agent_id,
        conversation_id=request.conversation_id or None,
        turn_id=request.turn_id or None,
        tool=request.tool_name,
        approval_status=request.status,
        reason=comment[:100],
        payload={"approval_request_id": request.pk, "tool_call_id": str(request.tool_call_id)},
    )
    if request.turn_id:
        enqueue_on_commit("runtime.resume_turn", request.turn_id)
    elif approve:
        enqueue_on_commit("tools.execute_approved", request.pk)
    return request


def begin_execution(request_id: int, action_digest: str) -> ApprovalRequest:
    """Claim an approved request for its one execution. A digest that differs from the
    one approved voids the request: what runs must be exactly what a person approved."""
    with transaction.atomic():
        request = ApprovalRequest.objects.select_for_update().get(pk=request_id)
        voided = False
        if request.status != ApprovalStatus.APPROVED:
            problem = f"The approval request is {request.get_status_display().lower()}, not approved."
        elif request.action_digest != action_digest:
            _close(request, ApprovalStatus.VOIDED, "The action differs from the one approved.")
            problem, voided = "The action differs from the one approved; the approval is void.", True
        else:
            request.status = ApprovalStatus.EXECUTING
            request.save(update_fields=["status"])
            return request
    raise NotExecutable(problem, voided=voided)  # after the commit, so a voiding stays


@transaction.atomic
def void(request_id: int, why: str) -> None:
    """Close an open (pending or approved) request that may no longer run, saying why."""
    request = ApprovalRequest.objects.select_for_update().get(pk=request_id)
    if request.status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED):
        _close(request, ApprovalStatus.VOIDED, why)


@transaction.atomic
def finish_execution(request_id: int, *, outcome: str, note: str) -> None:
    """Close a request claimed by ``begin_execution``: ``outcome`` is executed, failed, or
    voided (deciding again at execution refused the action, so nothing ran)."""
    request = ApprovalRequest.objects.select_for_update().get(pk=request_id)
    if request.status == ApprovalStatus.EXECUTING:
        _close(request, outcome, note)


def _close(request: ApprovalRequest, status: str, note: str) -> None:
    request.status = status
    request.outcome_note = note
    request.executed_at = timezone.now() if status in (ApprovalStatus.EXECUTED, ApprovalStatus.FAILED) else None
    request.save(update_fields=["status", "outcome_note", "executed_at"])
