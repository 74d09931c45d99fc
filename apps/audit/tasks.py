"""Periodic upkeep of the audit trail (scheduled in settings.CELERY_BEAT_SCHEDULE)."""

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="audit.chain_pending")
def chain_pending() -> int:
    """Chain events a process left pending (it died between its commit and chaining)."""
    from .chain import chain_pending as chain

    return chain()


@shared_task(name="audit.write_checkpoint")
def write_checkpoint() -> int | None:
    from .checkpoints import write_checkpoint as write

    checkpoint = write()
    return checkpoint.seq if checkpoint else None


@shared_task(name="audit.verify_chain")
def verify_chain() -> bool:
    """Verify the whole chain against the checkpoints and record the outcome as an event,
    so the audit pages show when the chain was last proven intact."""
    from . import record
    from .chain import verify_chain as verify
    from .checkpoints import CheckpointError, trusted_checkpoints
    from .events import EventType

    try:
        result = verify(checkpoints=trusted_checkpoints())
        ok, summary, broken = result.ok, result.summary(), result.broken_seq
    except CheckpointError as error:
        ok, summary, broken = False, f"checkpoints unusable: {error}", None
    if not ok:
        logger.error("Audit chain verification failed: %s", summary)
    record(
        EventType.AUDIT_VERIFIED, outcome="ok" if ok else "broken", payload={"summary": summary, "broken_seq": broken}
    )
    return ok
