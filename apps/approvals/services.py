"""Approval requests: opened by the tool gateway, decided by people (quorum, no
self-approval, approvers named by grants), expired when nobody decides in time, executed once.

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
from apps.accounts.permissions import roles_in_tenant
from controlplane.celery import enqueue_on_commit

from . import rules
from .choices import ApprovalStatus
from .models import ApprovalDecision, ApprovalRequest


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
    approvals_required: int = 1,
    sla_minutes: int | None = None,
    context: dict | None = None,
) -> ApprovalRequest:
    """Open a request (in the caller's transaction) and audit it. ``arguments`` are
    already redacted: the request shows people what the action is, not secrets.
    ``context`` is what the approver reads beside it (the conversation so far, the agent's
    stated reason, the sources it used), kept as it was when the agent asked."""
    now = timezone.now()
    due_at = now + datetime.timedelta(minutes=sla_minutes or settings.APPROVAL_SLA_MINUTES)
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
        context=context or {},
        approvals_required=max(1, approvals_required),
        due_at=due_at,
        expires_at=due_at + datetime.timedelta(minutes=settings.APPROVAL_GRACE_MINUTES),
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
        payload={
            "approval_request_id": request.pk,
            "tool_call_id": str(tool_call_id),
            "risk_tier": risk_tier,
            "approvals_required": request.approvals_required,
            "due_at": request.due_at.isoformat(),
        },
    )
    return request


def may_decide(user, request: ApprovalRequest) -> str:
    """Why ``user`` may not decide ``request``, or '' when they may (``rules.refusals``)."""
    return rules.refusals(user, [request])[request.pk]


def decide(request_id: int, *, by, approve: bool, comment: str = "") -> ApprovalRequest:
    """Approve or reject a pending request.

    The approver needs the approvals permission in the request's tenant and a role whose
    grant for the tool allows approving; nobody decides a request made on their own behalf;
    a rejection says why. A request needs ``approvals_required`` approvals from different
    people and closes at the first rejection. Past its expiry it can no longer be decided
    (it expires now, and its turn is told).

    When the decision is final, after the commit: the paused turn resumes (it runs the
    approved call once, or tells the model it was rejected); a request made outside a turn
    is executed directly; a rejected call is closed at the gateway.
    """
    comment = (comment or "").strip()
    with transaction.atomic():
        request = ApprovalRequest.objects.select_for_update().get(pk=request_id)
        problem = may_decide(by, request)
        if problem:
            raise PermissionDenied(problem)
        if request.status == ApprovalStatus.PENDING and timezone.now() >= request.expires_at:
            _expire(request)
            expired = True
        else:
            expired = False
            _record_decision(request, by, approve, comment)
    if expired:  # raised after the commit, so the expiry stays
        raise ValidationError("This request expired before it was decided: its SLA and grace period have passed.")
    return request


def _record_decision(request: ApprovalRequest, by, approve: bool, comment: str) -> None:
    if request.status != ApprovalStatus.PENDING:
        raise ValidationError(f"This request is {request.get_status_display().lower()}; it can no longer be decided.")
    if not approve and not comment:
        raise ValidationError({"comment": "Say why you reject it: the agent and the customer are told."})
    if request.decisions.filter(approver=by).exists():
        raise ValidationError("You have already approved this request; a different person must give the next approval.")
    roles = roles_in_tenant(by, request.tenant_id)
    ApprovalDecision.objects.create(
        request=request, approver=by, approve=approve, comment=comment, approver_roles=roles
    )
    approvals = request.decisions.filter(approve=True).count()
    if not approve:
        request.status, request.outcome_note = ApprovalStatus.REJECTED, comment
    elif approvals >= request.approvals_required:
        request.status = ApprovalStatus.APPROVED
        request.outcome_note = comment
    final = request.status != ApprovalStatus.PENDING
    if final:
        request.decided_at = timezone.now()
        request.save(update_fields=["status", "decided_at", "outcome_note"])
    audit.record(
        audit.EventType.APPROVAL_DECIDED,
        tenant=request.tenant_id,
        actor=by,
        actor_roles=roles,
        approver=by,
        agent=request.agent_id,
        conversation_id=request.conversation_id or None,
        turn_id=request.turn_id or None,
        tool=request.tool_name,
        decision="approve" if approve else "reject",
        approval_status=request.status,
        reason=comment[:100],
        payload={
            "approval_request_id": request.pk,
            "tool_call_id": str(request.tool_call_id),
            "approvals": approvals,
            "approvals_required": request.approvals_required,
        },
    )
    if final:
        _after_final(request)


def _after_final(request: ApprovalRequest) -> None:
    """Set what follows a final decision or an expiry going, after the commit."""
    if request.status != ApprovalStatus.APPROVED:
        enqueue_on_commit("tools.close_declined_call", request.pk)
    if request.turn_id:
        enqueue_on_commit("runtime.resume_turn", request.turn_id)
    elif request.status == ApprovalStatus.APPROVED:
        enqueue_on_commit("tools.execute_approved", request.pk)


def _expire(request: ApprovalRequest) -> None:
    request.status = ApprovalStatus.EXPIRED
    request.outcome_note = (
        f"Nobody decided it by {timezone.localtime(request.expires_at):%Y-%m-%d %H:%M} "
        f"(due {timezone.localtime(request.due_at):%H:%M}, then the grace period)."
    )
    request.save(update_fields=["status", "outcome_note"])
    audit.record(
        audit.EventType.APPROVAL_EXPIRED,
        tenant=request.tenant_id,
        agent=request.agent_id,
        conversation_id=request.conversation_id or None,
        turn_id=request.turn_id or None,
        tool=request.tool_name,
        approval_status=request.status,
        reason="expired",
        payload={
            "approval_request_id": request.pk,
            "tool_call_id": str(request.tool_call_id),
            "approvals": request.decisions.filter(approve=True).count(),
            "approvals_required": request.approvals_required,
        },
    )
    _after_final(request)


def expire_overdue(*, now=None, batch: int = 500) -> int:
    """Expire pending requests past their SLA and grace period, each in its own short
    transaction (rows another process holds are left for the next sweep). Their turns are
    told and their calls closed. Returns how many expired."""
    now = now or timezone.now()
    expired = 0
    candidates = list(
        ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("pk", flat=True)[:batch]
    )
    for request_id in candidates:
        with transaction.atomic():
            request = (
                ApprovalRequest.objects.select_for_update(skip_locked=True)
                .filter(pk=request_id, status=ApprovalStatus.PENDING, expires_at__lte=now)
                .first()
            )
            if request is not None:
                _expire(request)
                expired += 1
    return expired


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
def finish_execution(request_id: int, *, outcome: str, note: str, result: dict | None = None) -> None:
    """Close a request claimed by ``begin_execution``: ``outcome`` is executed, failed, or
    voided (deciding again at execution refused the action, so nothing ran); ``result`` is
    what the action returned, redacted."""
    request = ApprovalRequest.objects.select_for_update().get(pk=request_id)
    if request.status == ApprovalStatus.EXECUTING:
        _close(request, outcome, note, result)


def _close(request: ApprovalRequest, status: str, note: str, result: dict | None = None) -> None:
    request.status = status
    request.outcome_note = note
    request.result = result
    request.executed_at = timezone.now() if status in (ApprovalStatus.EXECUTED, ApprovalStatus.FAILED) else None
    request.save(update_fields=["status", "outcome_note", "result", "executed_at"])
