"""Thin Celery tasks: call the handoffs services."""

from celery import shared_task

from . import services


@shared_task(name="handoffs.escalate_overdue")
def escalate_overdue() -> int:
    """Every minute (beat): escalate waiting handoffs past their deadline. Idempotent: a
    handoff escalated once has a new deadline, so a second run leaves it alone."""
    return len(services.escalate_overdue())
