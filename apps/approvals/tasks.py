"""Thin Celery tasks for approvals."""

from celery import shared_task

from . import services


@shared_task(name="approvals.expire_overdue")
def expire_overdue() -> int:
    """Beat, every minute: expire requests past their SLA and grace period (their turns are told)."""
    return services.expire_overdue()
