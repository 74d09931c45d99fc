"""What people and systems do with handoffs and their queues.

- ``create_handoff``: the runtime (with the package it assembled) and the ``handoff.create``
  built-in tool hand a conversation over; it is routed to a queue and given a deadline.
- ``claim``, ``resolve``, ``return_to_agent``: a person works it. Each locks the handoff row
  (two people clicking "claim" at once: one wins, the other is told who has it), re-checks
  the person's permission in the handoff's tenant and the queue's roles inside the
  transaction, and writes its audit event in the same transaction.
- ``escalate_overdue``: the beat task's sweep, one transaction per handoff.
- ``save_queue``: queues are configuration (history, ``config.changed`` events).

Runtime sits above this app: returning a conversation to the agent reopens it through the
``runtime.reopen_conversation`` task, enqueued after the commit.
"""

from collections.abc import Callable
from datetime import datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from apps import audit
from apps.accounts.governance import (
    diff,
    record_change,
    require_tenant_permission,
    save_with_history,
    snapshot,
)
from apps.accounts.models import Membership, Role, Tenant, User
from apps.accounts.permissions import has_tenant_permission, roles_in_tenant
from controlplane.celery import enqueue_on_commit

from .choices import PRIORITY_ORDER, WAITING_STATUSES, HandoffStatus, TicketPriority
from .models import Handoff, HandoffQueue, InternalTicket

WORK_PERMISSION = "handoffs.change_handoff"
MAX_NOTE_CHARS = 4000
ESCALATION_BATCH = 500

QUEUE_FIELDS = (
    "name",
    "description",
    "sla_minutes",
    "reason_codes",
    "topics",
    "is_default",
    "escalate_to",
    "is_active",
)
PACKAGE_FIELDS = ("customer", "account_context", "transcript", "sources", "tool_calls", "sentiment")


class HandoffStateError(ValidationError):
    """The handoff is not in a state that allows this (already claimed by someone else,
    already resolved): a conflict with what another person did, not bad input."""


# --- Creating handoffs and tickets -------------------------------------------------------------

# The runtime registers a function that assembles the package for a handoff made by the
# handoff.create tool in the middle of a turn (this app cannot read conversations itself).
PackageBuilder = Callable[..., dict]
_package_builders: list[PackageBuilder] = []


def register_package_builder(builder: PackageBuilder) -> None:
    """``builder(conversation_id=, turn_id=)`` returns the package fields it can fill. One
    builder: registering again replaces it."""
    _package_builders[:] = [builder]


@transaction.atomic
def create_handoff(
    *,
    tenant_id: int,
    agent_id: int | None,
    requested_by_id: int | None,
    reason_code: str,
    reason: str,
    summary: str = "",
    urgency: str = TicketPriority.NORMAL,
    subject: str = "",
    channel: str = "",
    conversation_id: str = "",
    turn_id: str = "",
    topic: str = "",
    customer: dict | None = None,
    account_context: dict | None = None,
    transcript: list | None = None,
    sources: list | None = None,
    tool_calls: list | None = None,
    sentiment: dict | None = None,
) -> Handoff:
    """Hand a conversation to a person: routed to a queue (``recommend_queue``), priority
    = urgency, due after the queue's SLA for that priority."""
    package = {
        "customer": customer,
        "account_context": account_context,
        "transcript": transcript,
        "sources": sources,
        "tool_calls": tool_calls,
        "sentiment": sentiment,
    }
    if conversation_id and customer is None and _package_builders:
        built = _package_builders[0](conversation_id=conversation_id, turn_id=turn_id)
        package.update({field: built.get(field) for field in PACKAGE_FIELDS if package[field] is None})
    empty = {"customer": {}, "account_context": {}, "transcript": [], "sources": [], "tool_calls": [], "sentiment": {}}
    handoff = Handoff(
        tenant_id=tenant_id,
        agent_id=agent_id,
        requested_by_id=requested_by_id,
        reason_code=(reason_code or "").strip(),
        reason=(reason or "").strip(),
        topic=(topic or "").strip()[:100],
        summary=summary,
        urgency=urgency,
        priority=urgency,
        subject=subject,
        channel=channel,
        conversation_id=conversation_id,
        turn_id=turn_id,
        queue=recommend_queue(tenant_id=tenant_id, reason_code=reason_code, topic=topic),
        **{field: value if value is not None else empty[field] for field, value in package.items()},
    )
    if not handoff.reason_code or not handoff.reason:
        raise ValidationError({"reason": "A handoff needs a reason code and a sentence saying why a person is needed."})
    handoff.set_deadline(timezone.now())
    handoff.full_clean(exclude=["tenant", "agent", "requested_by", "queue"])  # set by the caller or just routed
    handoff.save()
    audit.record(
        audit.EventType.HANDOFF_CREATED,
        tenant=tenant_id,
        actor=requested_by_id,
        agent=agent_id,
        conversation_id=conversation_id or None,
        turn_id=turn_id or None,
        reason=handoff.reason_code[:100],
        payload={
            "handoff_id": handoff.pk,
            "urgency": urgency,
            "subject": subject or None,
            "queue": handoff.queue.name if handoff.queue else None,
            "priority": handoff.priority,
            "due_at": handoff.due_at.isoformat(),
        },
    )
    return handoff


@transaction.atomic
def create_ticket(
    *,
    tenant_id: int,
    agent_id: int | None,
    requested_by_id: int | None,
    title: str,
    body: str = "",
    priority: str = TicketPriority.NORMAL,
    subject: str = "",
    conversation_id: str = "",
) -> InternalTicket:
    ticket = InternalTicket.objects.create(
        tenant_id=tenant_id,
        agent_id=agent_id,
        requested_by_id=requested_by_id,
        title=title,
        body=body,
        priority=priority,
        subject=subject,
        conversation_id=conversation_id,
    )
    return ticket


# --- Routing -----------------------------------------------------------------------------------


def recommend_queue(*, tenant_id: int, reason_code: str, topic: str = "") -> HandoffQueue | None:
    """The tenant's active queue naming the escalation topic; else one naming the reason
    code; else its default queue; else none (the handoff is still listed, unqueued). Ties
    go to the queue first by name."""
    queues = list(HandoffQueue.objects.filter(tenant_id=tenant_id, is_active=True).order_by("name", "pk"))
    if topic:
        for queue in queues:
            if queue.takes_topic(topic):
                return queue
    for queue in queues:
        if queue.takes_reason(reason_code):
            return queue
    return next((queue for queue in queues if queue.is_default), None)


# --- Who may work a handoff ------------------------------------------------------------------


def work_refusal(user, handoff: Handoff) -> str:
    """Why ``user`` may not work ``handoff`` ("" when they may): they need to work handoffs
    in its tenant, and hold one of its queue's roles when the queue names any."""
    if user is None or not user.is_authenticated:
        return "Sign in to work handoffs."
    if user.is_superuser:
        return ""
    if not has_tenant_permission(user, handoff.tenant_id, WORK_PERMISSION):
        return f"You may read this handoff but not work handoffs of {handoff.tenant}."
    queue = handoff.queue
    if queue is None:
        return ""
    roles = list(queue.roles.all())
    if roles and not Membership.objects.filter(user_id=user.pk, role__in=roles).exists():
        names = ", ".join(sorted(role.name for role in roles))
        return f"The queue “{queue.name}” is worked by people holding {names}; you hold none of those roles."
    return ""


def _require_worker(user, handoff: Handoff) -> None:
    refusal = work_refusal(user, handoff)
    if refusal:
        raise PermissionDenied(refusal)


def _locked(handoff_id) -> Handoff:
    """The handoff, its row locked until the transaction ends.

    Only the bare row: after waiting for another transaction's lock, PostgreSQL re-reads
    the locked row but not rows joined to it, so a ``select_related`` claimer or queue
    could be the one from before that transaction. Related rows are loaded afterwards,
    when the lock is held and what they read is current."""
    try:
        return Handoff.objects.select_for_update().get(pk=handoff_id)
    except (Handoff.DoesNotExist, ValueError, TypeError):
        raise ValidationError({"handoff": f"There is no handoff {handoff_id}."}) from None


def _note(text: str, field: str, ask: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ValidationError({field: ask})
    if len(text) > MAX_NOTE_CHARS:
        raise ValidationError({field: f"Keep it to {MAX_NOTE_CHARS} characters (this is {len(text)})."})
    return text


def _record(event_type: str, handoff: Handoff, by: User | None, **payload) -> None:
    audit.record(
        event_type,
        tenant=handoff.tenant,
        actor=by,
        actor_roles=roles_in_tenant(by, handoff.tenant_id) if by is not None else [],
        agent=handoff.agent_id,
        conversation_id=handoff.conversation_id or None,
        turn_id=handoff.turn_id or None,
        reason=handoff.reason_code[:100],
        outcome=handoff.status,
        payload={
            "handoff_id": handoff.pk,
            "queue": handoff.queue.name if handoff.queue else None,
            "priority": handoff.priority,
            **payload,
        },
    )


# --- Working a handoff ----------------------------------------------------------------------


@transaction.atomic
def claim(*, handoff_id: int, by: User) -> Handoff:
    """Take the handoff: it is yours to answer. Claiming one you already hold changes nothing."""
    handoff = _locked(handoff_id)
    _require_worker(by, handoff)
    if handoff.status == HandoffStatus.CLAIMED:
        if handoff.claimed_by_id == by.pk:
            return handoff
        raise HandoffStateError(
            f"{handoff.claimed_by} claimed this handoff at {handoff.claimed_at:%Y-%m-%d %H:%M} UTC; "
            "only they can resolve it or return it to the agent."
        )
    if handoff.status != HandoffStatus.OPEN:
        raise HandoffStateError(f"This handoff is already {handoff.get_status_display().lower()}.")
    handoff.status, handoff.claimed_by, handoff.claimed_at = HandoffStatus.CLAIMED, by, timezone.now()
    handoff.save(update_fields=["status", "claimed_by", "claimed_at"])
    _record(audit.EventType.HANDOFF_CLAIMED, handoff, by, due_at=handoff.due_at.isoformat() if handoff.due_at else None)
    return handoff


@transaction.atomic
def resolve(*, handoff_id: int, by: User, resolution: str) -> Handoff:
    """Close the handoff with what was done for the customer. Only the person who claimed it
    resolves it; the conversation stays with people (the agent takes no more turns in it)."""
    resolution = _note(resolution, "resolution", "Say how it was resolved: it is kept with the handoff.")
    handoff = _locked(handoff_id)
    _require_worker(by, handoff)
    if handoff.status == HandoffStatus.OPEN:
        raise HandoffStateError("Claim this handoff before resolving it, so nobody else works it meanwhile.")
    if handoff.status != HandoffStatus.CLAIMED:
        raise HandoffStateError(f"This handoff is already {handoff.get_status_display().lower()}.")
    if handoff.claimed_by_id != by.pk:
        raise PermissionDenied(f"Only {handoff.claimed_by}, who claimed this handoff, may resolve it.")
    handoff.status, handoff.resolved_by, handoff.resolved_at = HandoffStatus.RESOLVED, by, timezone.now()
    handoff.resolution = resolution
    handoff.save(update_fields=["status", "resolved_by", "resolved_at", "resolution"])
    _record(audit.EventType.HANDOFF_RESOLVED, handoff, by, resolution=resolution)
    return handoff


@transaction.atomic
def return_to_agent(*, handoff_id: int, by: User, note: str) -> Handoff:
    """Give the conversation back to the agent (a person decided it can go on without
    them): open handoffs by anyone who works the queue, claimed ones by their claimer. The
    runtime reopens the conversation after the commit unless another handoff of it waits."""
    note = _note(note, "note", "Say why the agent can take the conversation back: it is kept with the handoff.")
    handoff = _locked(handoff_id)
    _require_worker(by, handoff)
    if handoff.status not in WAITING_STATUSES:
        raise HandoffStateError(f"This handoff is already {handoff.get_status_display().lower()}.")
    if handoff.status == HandoffStatus.CLAIMED and handoff.claimed_by_id != by.pk:
        raise PermissionDenied(f"Only {handoff.claimed_by}, who claimed this handoff, may return it to the agent.")
    handoff.status, handoff.returned_by, handoff.returned_at = HandoffStatus.RETURNED, by, timezone.now()
    handoff.return_note = note
    handoff.save(update_fields=["status", "returned_by", "returned_at", "return_note"])
    _record(audit.EventType.HANDOFF_RETURNED, handoff, by, note=note)
    if handoff.conversation_id:
        enqueue_on_commit("runtime.reopen_conversation", handoff.conversation_id)
    return handoff


# --- Escalation --------------------------------------------------------------------------------


def next_priority(priority: str) -> str:
    position = PRIORITY_ORDER.index(priority) if priority in PRIORITY_ORDER else 1
    return PRIORITY_ORDER[min(position + 1, len(PRIORITY_ORDER) - 1)]


def escalate_overdue(*, now: datetime | None = None) -> list[int]:
    """Escalate every waiting handoff past its deadline, once: one priority step up, to the
    queue's ``escalate_to`` when it has one, with a new deadline from now. Returns the ids
    escalated. Running it again (or on two beat schedulers at once) escalates nothing twice:
    each handoff is re-read under its row lock and must still be overdue."""
    now = now or timezone.now()
    overdue = (
        Handoff.objects.filter(status__in=WAITING_STATUSES, due_at__lte=now)
        .order_by("due_at")
        .values_list("pk", flat=True)[:ESCALATION_BATCH]
    )
    return [pk for pk in list(overdue) if _escalate(pk, now)]


@transaction.atomic
def _escalate(handoff_id: int, now: datetime) -> bool:
    handoff = Handoff.objects.select_for_update().filter(pk=handoff_id).first()  # the bare row: see _locked
    if handoff is None or handoff.status not in WAITING_STATUSES or handoff.due_at is None or handoff.due_at > now:
        return False  # resolved, returned or escalated meanwhile
    was = {"queue": handoff.queue.name if handoff.queue else None, "priority": handoff.priority}
    was_due, released_from = handoff.due_at, None
    if handoff.queue is not None:
        target = (
            handoff.queue.escalate_to if handoff.queue.escalate_to and handoff.queue.escalate_to.is_active else None
        )
    else:  # unqueued: a queue may have been set up since
        target = recommend_queue(tenant_id=handoff.tenant_id, reason_code=handoff.reason_code, topic=handoff.topic)
    if target is not None and target != handoff.queue:
        if handoff.status == HandoffStatus.CLAIMED:
            # The new queue's people take it over: a claim from the queue that missed the SLA is released.
            released_from = str(handoff.claimed_by)
            handoff.status, handoff.claimed_by, handoff.claimed_at = HandoffStatus.OPEN, None, None
        handoff.queue = target
    handoff.priority = next_priority(handoff.priority)
    handoff.escalated_at = now
    handoff.escalation_level += 1
    handoff.set_deadline(now)
    handoff.save(
        update_fields=[
            "queue",
            "priority",
            "status",
            "claimed_by",
            "claimed_at",
            "escalated_at",
            "escalation_level",
            "due_at",
            "due_soon_at",
        ]
    )
    _record(
        audit.EventType.HANDOFF_ESCALATED,
        handoff,
        None,
        level=handoff.escalation_level,
        was_due_at=was_due.isoformat(),
        due_at=handoff.due_at.isoformat(),
        from_queue=was["queue"],
        from_priority=was["priority"],
        claim_released_from=released_from,
    )
    return True


# --- Queues (configuration) --------------------------------------------------------------------


def _queue_snapshot(queue: HandoffQueue, roles) -> dict:
    return {**snapshot(queue, QUEUE_FIELDS), "roles": sorted(str(role) for role in roles)}


@transaction.atomic
def save_queue(
    *,
    by: User,
    tenant: Tenant | None = None,
    queue: HandoffQueue | None = None,
    roles: list[Role] | None = None,
    reason: str = "",
    **fields,
) -> HandoffQueue:
    """Create a queue (``tenant``) or change one (``queue``); ``roles`` None leaves them as
    they are. Making a queue the default takes that from the tenant's previous default."""
    unknown = set(fields) - set(QUEUE_FIELDS)
    if unknown:
        raise ValidationError(f"These queue fields cannot be set here: {', '.join(sorted(unknown))}.")
    if queue is None:
        message = f"You may not add handoff queues in {tenant}."
        require_tenant_permission(by, tenant.pk, "handoffs.add_handoffqueue", message)
        queue, before, what = HandoffQueue(tenant=tenant), {}, "handoffs.queue_created"
        current_roles: list[Role] = []
    else:
        queue = HandoffQueue.objects.select_for_update().select_related("tenant").get(pk=queue.pk)
        message = f"You may not change handoff queues in {queue.tenant}."
        require_tenant_permission(by, queue.tenant_id, "handoffs.change_handoffqueue", message)
        current_roles = list(queue.roles.all())
        before, what = _queue_snapshot(queue, current_roles), "handoffs.queue_changed"
    for field, value in fields.items():
        setattr(queue, field, value)
    # The one-default rule is checked once the previous default has lost it, below.
    queue.full_clean(exclude=["is_default"])
    new_roles = current_roles if roles is None else list(roles)
    queue.check_roles(new_roles)
    after = _queue_snapshot(queue, new_roles)
    changes = diff(before, after)
    if queue.pk and not changes:
        return queue  # nothing changed: no history row, no audit event
    if queue.is_default:
        previous = (
            HandoffQueue.objects.select_for_update()
            .filter(tenant_id=queue.tenant_id, is_default=True)
            .exclude(pk=queue.pk)
        )
        for other in previous:
            other.is_default = False
            save_with_history(other, by=by, reason=f"“{queue.name}” became the default queue")
    queue.validate_constraints()
    save_with_history(queue, by=by, reason=reason or ("Queue created" if not before else "Queue changed"))
    if roles is not None and {role.pk for role in new_roles} != {role.pk for role in current_roles}:
        queue._history_user = by
        queue.roles.set(new_roles)
    record_change(
        by=by,
        tenant=queue.tenant,
        what=what,
        payload={"queue_id": queue.pk, "queue": queue.name, "changes": changes, "reason": reason or None},
    )
    return queue
