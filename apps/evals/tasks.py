"""Thin Celery tasks for evaluations."""

from celery import shared_task

from . import services


@shared_task(name="evals.execute_run")
def execute_run(run_id: int) -> str:
    """Execute a queued evaluation run (each case as an evaluation turn, scored)."""
    return services.execute_run(run_id)


@shared_task(name="evals.run_weekly")
def run_weekly() -> list[int]:
    """Beat, weekly: queue a run of every active weekly suite."""
    return services.schedule_weekly_runs()
