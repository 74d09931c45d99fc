"""Thin Celery tasks: take ids, call the runtime's services."""

import os
import socket

from celery import shared_task

from . import services


@shared_task(name="runtime.health_probe", ignore_result=False)
def health_probe() -> str:
    """Answered by whichever worker picks it up: proves a worker is consuming the queue."""
    return f"{socket.gethostname()} pid {os.getpid()}"


@shared_task(name="runtime.run_turn", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=100)
def run_turn(self, turn_id: str) -> str:
    """Run a queued turn. Delivered again after a worker dies (late ack): while the dead
    worker's lease has not lapsed, try again when it will have."""
    status = services.run_turn(turn_id)
    if status == "busy":
        wait = services.lease_remaining(turn_id)
        if wait is not None:
            raise self.retry(countdown=max(1.0, wait + 0.5))
    return status


@shared_task(name="runtime.resume_turn", acks_late=True, reject_on_worker_lost=True)
def resume_turn(turn_id: str) -> str:
    """Go on with a turn that waited for approvals (enqueued by the approvals app when a
    request is decided)."""
    return services.resume_turn(turn_id)


@shared_task(name="runtime.recover_turns")
def recover_turns() -> int:
    return len(services.recover_turns())


@shared_task(name="runtime.reopen_conversation")
def reopen_conversation(conversation_id: str) -> bool:
    """A person returned a handoff to the agent (enqueued by the handoffs app)."""
    return services.reopen_conversation(conversation_id)
