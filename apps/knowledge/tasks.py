from celery import shared_task

from . import services


@shared_task(name="knowledge.sweep_freshness")
def sweep_freshness() -> dict:
    """Beat, every KNOWLEDGE_SWEEP_MINUTES: flag overdue sources and tell their owners."""
    return services.sweep_freshness()
