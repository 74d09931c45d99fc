"""Creating handoffs and internal tickets. The tool gateway's built-in tools call these;
the queues that work them arrive with the human-in-the-loop issue."""

from django.db import transaction

from apps import audit

from .choices import TicketPriority
from .models import Handoff, InternalTicket


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
) -> Handoff:
    handoff = Handoff.objects.create(
        tenant_id=tenant_id,
        agent_id=agent_id,
        requested_by_id=requested_by_id,
        reason_code=reason_code,
        reason=reason,
        summary=summary,
        urgency=urgency,
        subject=subject,
        channel=channel,
        conversation_id=conversation_id,
        turn_id=turn_id,
    )
    audit.record(
        audit.EventType.HANDOFF_CREATED,
        tenant=tenant_id,
        actor=requested_by_id,
        agent=agent_id,
        conversation_id=conversation_id or None,
        turn_id=turn_id or None,
        reason=reason_code[:100],
        payload={"handoff_id": handoff.pk, "urgency": urgency, "subject": subject or None},
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
