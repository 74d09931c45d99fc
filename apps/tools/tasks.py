"""Thin Celery tasks: take ids, call the gateway."""

from celery import shared_task

from . import gateway


@shared_task(name="tools.execute_approved", acks_late=True)
def execute_approved(approval_request_id: int) -> str:
    """Run an approved call (enqueued by the approvals app once a request reaches quorum).
    Safe to deliver twice: the approval is single use and the call has its idempotency key."""
    return gateway.execute_approved(approval_request_id).outcome


@shared_task(name="tools.close_interrupted_calls")
def close_interrupted_calls() -> int:
    return gateway.close_interrupted_calls()


@shared_task(name="tools.close_declined_call")
def close_declined_call(approval_request_id: int) -> bool:
    """Close the call of a rejected or expired approval request (enqueued by approvals)."""
    return gateway.close_declined_call(approval_request_id)
