"""Conversations and turns: who may talk to an agent, what a turn may carry, and handing
turns to workers. The agent loop itself is in engine.py.

The actor of every turn is the authenticated account: a person, or a channel integration
acting for a customer it names as the subject. Nobody submits a turn as someone else.
"""

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps import audit
from apps.accounts.governance import require_tenant_permission
from apps.accounts.models import User
from apps.agents.choices import Channel
from apps.agents.models import Agent
from apps.agents.services import may_start_turn
from apps.handoffs.choices import WAITING_STATUSES
from apps.handoffs.models import Handoff
from apps.knowledge.choices import Audience
from controlplane.celery import enqueue_on_commit

from . import engine
from .choices import FINISHED_STATUSES, ConversationStatus, TurnStatus
from .models import Conversation, Turn

CUSTOMER_CHANNELS = (Channel.WEB_CHAT, Channel.EMAIL, Channel.VOICE, Channel.SMS)
SUBJECT_FIELDS = ("subject", "subject_verified", "region", "segment", "plan", "brand", "audience")


class TurnRefused(Exception):
    """The agent may not take a turn now (suspended, retired, or a kill switch)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def open_conversation(*, actor: User, agent: Agent, channel: str, **subject) -> Conversation:
    """Open a conversation between ``actor`` and ``agent`` about a subject (the customer:
    id, verified flag, region, segment, plan, brand; audience customer or internal)."""
    require_tenant_permission(
        actor, agent.tenant_id, "runtime.add_conversation", f"You may not talk to agents of {agent.tenant}."
    )
    unknown = set(subject) - set(SUBJECT_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown subject fields: {', '.join(sorted(unknown))}.")
    errors = {}
    if agent.channels and channel not in agent.channels:
        errors["channel"] = f"{agent} serves {', '.join(agent.channels)}, not “{channel}”."
    audience = subject.get("audience", Audience.CUSTOMER)
    if audience not in Audience.values:
        errors["audience"] = f"Audience is one of {', '.join(Audience.values)}."
    elif audience == Audience.INTERNAL and channel in CUSTOMER_CHANNELS:
        # Internal knowledge must not reach a customer: on a customer channel the reader is one.
        errors["audience"] = f"A conversation on {channel} is read by a customer: its audience is customer."
    if errors:
        raise ValidationError(errors)
    conversation = Conversation(tenant_id=agent.tenant_id, agent=agent, actor=actor, channel=channel, **subject)
    conversation.full_clean()
    conversation.save()
    return conversation


def submit_turn(*, conversation: Conversation, actor: User, text: str, client_key: str = "") -> Turn:
    """Queue a turn and hand it to a worker (after the commit). Posting the same
    ``client_key`` again returns the first turn instead of a second one."""
    if actor.pk != conversation.actor_id:
        raise PermissionDenied("Only the account that opened this conversation may continue it.")
    require_tenant_permission(
        actor, conversation.tenant_id, "runtime.add_turn", f"You may not talk to agents of {conversation.tenant}."
    )
    text = (text or "").strip()
    if not text:
        raise ValidationError({"text": "Write a message."})
    if len(text) > settings.TURN_MAX_INPUT_CHARS:
        raise ValidationError({"text": f"A message may be at most {settings.TURN_MAX_INPUT_CHARS} characters."})
    client_key = (client_key or "").strip()
    if len(client_key) > 100:
        raise ValidationError({"client_key": "An idempotency key may be at most 100 characters."})
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if client_key:
            earlier = Turn.objects.filter(conversation=locked, client_key=client_key).first()
            if earlier is not None:
                return earlier
        permission = may_start_turn(locked.agent_id)
        refusal = permission.reason if not permission.allowed else _busy(locked)
        if not refusal:
            number = (locked.turns.aggregate(last=Max("number"))["last"] or 0) + 1
            turn = Turn.objects.create(
                conversation=locked,
                tenant_id=locked.tenant_id,
                agent_id=locked.agent_id,
                actor=actor,
                number=number,
                client_key=client_key,
                input=text,
            )
            _record_received(turn, locked)
            enqueue_on_commit("runtime.run_turn", str(turn.pk))
            return turn
    audit.record(
        audit.EventType.TURN_REFUSED,
        tenant=conversation.tenant_id,
        actor=actor,
        agent=conversation.agent_id,
        conversation_id=str(conversation.pk),
        reason=refusal[:100],
    )
    raise TurnRefused(refusal)


def run_evaluation_turn(
    *, agent: Agent, actor: User, channel: str, text: str, subject: dict | None = None, simulated_tool_results=None
) -> Turn:
    """Run one message as a real turn in evaluation mode, here and now (the caller is an
    evaluation run, already on a worker): the same guardrails, retrieval, model, gateway
    decisions and decision layer as any turn, but no tool executes (a simulated result may
    stand in for one the gateway would run), nobody is handed the conversation, nobody is
    locked out, no knowledge gap is counted and reports leave it out. The caller checks who
    may run evaluations; ``actor`` is whose roles the turn acts with."""
    subject = dict(subject or {})
    unknown = set(subject) - set(SUBJECT_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown subject fields: {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        conversation = Conversation.objects.create(
            tenant_id=agent.tenant_id,
            agent=agent,
            actor=actor,
            channel=channel,
            evaluation=True,
            simulated_tool_results=simulated_tool_results or None,
            **subject,
        )
        turn = Turn.objects.create(
            conversation=conversation, tenant_id=agent.tenant_id, agent=agent, actor=actor, number=1, input=text
        )
        _record_received(turn, conversation, evaluation=True)
    engine.run(turn.pk)
    return Turn.objects.get(pk=turn.pk)


def _record_received(turn: Turn, conversation: Conversation, **extra) -> None:
    audit.record(
        audit.EventType.TURN_RECEIVED,
        **engine.audit_refs(turn),
        payload={
            "channel": conversation.channel,
            "subject": conversation.subject or None,
            "number": turn.number,
            **extra,
        },
    )


def _busy(conversation: Conversation) -> str:
    if conversation.status == ConversationStatus.HANDED_OFF:
        return "This conversation was handed to a person, who will answer; the agent takes no more turns in it."
    unfinished = conversation.turns.exclude(status__in=FINISHED_STATUSES).order_by("-number").first()
    if unfinished is None:
        return ""
    return f"Turn {unfinished.number} is still {unfinished.get_status_display().lower()}; wait for it to finish."


def reopen_conversation(conversation_id) -> bool:
    """Let the agent take turns again in a conversation a person returned to it: only a
    handed-off conversation, and only once no handoff of it still waits for a person.
    Returns whether it was reopened. The conversation row is locked, so a handoff returned
    while another is created cannot leave it open with a person still owed an answer."""
    with transaction.atomic():
        try:
            conversation = Conversation.objects.select_for_update().filter(pk=conversation_id).first()
        except ValidationError:  # not a conversation id
            return False
        if conversation is None or conversation.status != ConversationStatus.HANDED_OFF:
            return False
        waiting = Handoff.objects.filter(conversation_id=str(conversation.pk), status__in=WAITING_STATUSES)
        if waiting.exists():
            return False
        conversation.status = ConversationStatus.OPEN
        conversation.save(update_fields=["status", "updated_at"])
    return True


def run_turn(turn_id) -> str:
    return engine.run(turn_id)


def resume_turn(turn_id) -> str:
    return engine.resume(turn_id)


def lease_remaining(turn_id) -> float | None:
    """Seconds until a running turn's lease lapses (None: not running)."""
    expires = (
        Turn.objects.filter(pk=turn_id, status=TurnStatus.RUNNING).values_list("lease_expires_at", flat=True).first()
    )
    if expires is None:
        return None
    return max(0.0, (expires - timezone.now()).total_seconds())


def recover_turns() -> list[str]:
    """Hand back to a worker every turn whose worker stopped renewing its lease, and every
    queued turn whose task was lost. Claiming is atomic, so a turn that is in fact still
    running, or picked up twice, runs once."""
    stale = engine.stale_turn_ids()
    for turn_id in stale:
        enqueue_on_commit("runtime.run_turn", turn_id)
    return stale
