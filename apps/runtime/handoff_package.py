"""The handoff package: what a person needs to take a conversation over from an agent
without asking the customer to repeat themselves.

The runtime assembles it, because it owns what the package is made of (the conversation,
its turns and their traces); ``apps.handoffs`` stores it by value and routes it. Every
part is bounded, so a long conversation cannot make a handoff unreadable:

- why: a reason code and one specific sentence (what the customer said, which topic and
  word, which limit), never just "user requested";
- who: the customer as the conversation names them, and their account context (earlier
  conversations and handoffs with this customer in the tenant, their last contact);
- what happened: the recent turns (customer's words and agent's answers), the sources
  retrieved (and whether an answer cited them), the tool calls attempted with outcomes;
- how urgent: the sentiment and an urgency (the handoff's first SLA priority).
"""

from django.core.exceptions import ValidationError

from apps.agents.models import Agent
from apps.handoffs.choices import PRIORITY_ORDER
from apps.handoffs.models import Handoff

from . import decisions
from .choices import Decision, StepKind
from .models import Conversation, Step, Turn

TRANSCRIPT_TURNS = 10  # the latest turns of the conversation a person reads
TRANSCRIPT_CHARS = 1000  # of each message
QUOTE_CHARS = 200  # of the customer's words quoted in the reason
EARLIER_ITEMS = 5  # earlier conversations and handoffs listed
MAX_SOURCES = 20
MAX_TOOL_CALLS = 20
MESSAGE_CHARS = 500  # of a tool result's message
_PACKAGE_STEPS = (StepKind.RETRIEVAL, StepKind.TOOL_CALL, StepKind.RESUME, StepKind.DECISION)


def build(*, turn: Turn, conversation: Conversation, agent: Agent, outcome: decisions.Outcome, state: dict) -> dict:
    """The package of a turn the decision layer escalated: every field of
    ``handoffs.services.create_handoff`` but the ids. ``outcome.message`` is what the
    customer is told this turn (the turn's output is saved after the handoff)."""
    turns = _recent_turns(conversation, turn)
    steps = _steps_of(turns)
    sentiment = state.get("sentiment") or _sentiment(turn.input)
    fired = [trigger for trigger in outcome.triggers if trigger.fired]
    topics = decisions.topic_matches(agent, turn.input) if any(t.name == "topic" for t in fired) else []
    code = outcome.reason
    reason = _reason(code, outcome, turn=turn, agent=agent, sentiment=sentiment, topics=topics, turns=turns)
    also = [trigger.name for trigger in fired if trigger.name != code]
    if also:
        reason += f" Also fired: {', '.join(also)}."
    package = _context(conversation, turn, turns, steps, current=(outcome.message, Decision.ESCALATE, code))
    return {
        "reason_code": code[:64],
        "reason": reason,
        "topic": topics[0][0] if topics else "",
        "urgency": _urgency(fired, sentiment),
        "sentiment": sentiment,
        "summary": _summary(agent, conversation, turn, code, package),
        "subject": conversation.subject,
        "channel": conversation.channel,
        **package,
    }


def for_tool_handoff(*, conversation_id: str, turn_id: str = "") -> dict:
    """The package fields a handoff made by the ``handoff.create`` tool in the middle of a
    turn can have (its reason and summary are the model's): registered with
    ``apps.handoffs.services.register_package_builder`` in RuntimeConfig.ready."""
    try:
        conversation = Conversation.objects.filter(pk=conversation_id).first()
        turn = Turn.objects.filter(pk=turn_id, conversation_id=conversation_id).first() if turn_id else None
    except ValidationError:  # not a conversation id this runtime made
        return {}
    if conversation is None:
        return {}
    turn = turn or conversation.turns.order_by("-number").first()
    if turn is None:
        return {"customer": _customer(conversation), "account_context": _account_context(conversation)}
    turns = _recent_turns(conversation, turn)
    steps = _steps_of(turns)
    sentiment = (turn.state or {}).get("sentiment") or _sentiment(turn.input)
    current = (turn.output, turn.decision, turn.decision_reason)  # mid-turn: nothing decided yet
    return {"sentiment": sentiment, **_context(conversation, turn, turns, steps, current=current)}


# --- Parts -------------------------------------------------------------------------------------


def _recent_turns(conversation: Conversation, turn: Turn) -> list[dict]:
    rows = (
        Turn.objects.filter(conversation_id=conversation.pk, number__lte=turn.number)
        .order_by("-number")
        .values("id", "number", "input", "output", "decision", "decision_reason")[:TRANSCRIPT_TURNS]
    )
    return list(reversed(rows))


def _steps_of(turns: list[dict]) -> list[dict]:
    """The trace entries the package reads, in order, for the turns shown (one query)."""
    numbers = {row["id"]: row["number"] for row in turns}
    rows = Step.objects.filter(turn_id__in=list(numbers), kind__in=_PACKAGE_STEPS).values(
        "turn_id", "number", "kind", "detail"
    )
    found = [{**row, "turn": numbers[row["turn_id"]]} for row in rows]
    return sorted(found, key=lambda row: (row["turn"], row["number"]))


def _context(conversation, turn, turns, steps, *, current: tuple[str, str, str]) -> dict:
    """``current``: what the agent says, decides and why in the turn handing over (the turn's
    own row is saved after the handoff)."""
    return {
        "customer": _customer(conversation),
        "account_context": _account_context(conversation),
        "transcript": _transcript(turns, turn, current),
        "sources": _sources(steps),
        "tool_calls": _tool_calls(steps),
    }


def _clip(text: str, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _quote(text: str) -> str:
    return f"“{_clip(text, QUOTE_CHARS)}”"


def _sentiment(text: str) -> dict:
    found = decisions.sentiment_of(text)
    return {"label": found.label, "score": found.score, "cues": found.cues}


def _customer(conversation: Conversation) -> dict:
    return {
        "subject": conversation.subject,
        "verified": conversation.subject_verified,
        "region": conversation.region,
        "segment": conversation.segment,
        "plan": conversation.plan,
        "brand": conversation.brand,
        "audience": conversation.audience,
        "channel": conversation.channel,
    }


def _when(moment) -> str | None:
    return moment.isoformat() if moment else None


def _account_context(conversation: Conversation) -> dict:
    """Earlier contact with the same customer (by subject) in the conversation's tenant."""
    if not conversation.subject:
        return {
            "known_customer": False,
            "note": "The conversation names no customer id, so earlier contact cannot be looked up.",
            "earlier_conversations": [],
            "earlier_conversation_count": 0,
            "earlier_handoffs": [],
            "earlier_handoff_count": 0,
            "last_contact": None,
        }
    earlier = Conversation.objects.filter(tenant_id=conversation.tenant_id, subject=conversation.subject).exclude(
        pk=conversation.pk
    )
    conversations = list(
        earlier.order_by("-updated_at").values("id", "agent__name", "channel", "status", "created_at", "updated_at")[
            :EARLIER_ITEMS
        ]
    )
    handoffs = Handoff.objects.filter(tenant_id=conversation.tenant_id, subject=conversation.subject)
    earlier_handoffs = list(
        handoffs.order_by("-created_at").values(
            "id", "reason_code", "reason", "status", "resolution", "return_note", "queue__name", "created_at"
        )[:EARLIER_ITEMS]
    )
    return {
        "known_customer": True,
        "earlier_conversations": [
            {
                "conversation_id": str(row["id"]),
                "agent": row["agent__name"],
                "channel": row["channel"],
                "status": row["status"],
                "started_at": _when(row["created_at"]),
                "last_activity_at": _when(row["updated_at"]),
            }
            for row in conversations
        ],
        "earlier_conversation_count": earlier.count() if len(conversations) == EARLIER_ITEMS else len(conversations),
        "earlier_handoffs": [
            {
                "handoff_id": row["id"],
                "reason_code": row["reason_code"],
                "reason": _clip(row["reason"], 300),
                "status": row["status"],
                "outcome": _clip(row["resolution"] or row["return_note"], 300) or "still waiting for a person",
                "queue": row["queue__name"],
                "created_at": _when(row["created_at"]),
            }
            for row in earlier_handoffs
        ],
        "earlier_handoff_count": handoffs.count() if len(earlier_handoffs) == EARLIER_ITEMS else len(earlier_handoffs),
        "last_contact": _when(conversations[0]["updated_at"]) if conversations else None,
    }


def _transcript(turns: list[dict], turn: Turn, current: tuple[str, str, str]) -> list[dict]:
    entries = []
    for row in turns:
        said, decision, why = (
            current if row["id"] == turn.pk else (row["output"], row["decision"], row["decision_reason"])
        )
        entries.append(
            {
                "turn": row["number"],
                "customer": _clip(row["input"], TRANSCRIPT_CHARS),
                "agent": _clip(said, TRANSCRIPT_CHARS),
                "decision": decision,
                "decision_reason": why,
            }
        )
    return entries


def _sources(steps: list[dict]) -> list[dict]:
    found: dict = {}
    cited: set = set()
    for step in steps:
        if step["kind"] == StepKind.RETRIEVAL:
            for source in step["detail"].get("sources", []):
                found[source["source_id"]] = {
                    "source_id": source["source_id"],
                    "title": source.get("title", ""),
                    "version": source.get("version"),
                    "turn": step["turn"],
                }
        elif step["kind"] == StepKind.DECISION:
            cited.update(source["source_id"] for source in step["detail"].get("cited", []))
    return [{**source, "cited": source_id in cited} for source_id, source in found.items()][-MAX_SOURCES:]


def _tool_calls(steps: list[dict]) -> list[dict]:
    calls = []
    for step in steps:
        detail = step["detail"]
        if step["kind"] == StepKind.TOOL_CALL:
            calls.append(
                {
                    "turn": step["turn"],
                    "tool": detail.get("tool") or detail.get("function", ""),
                    "outcome": detail.get("outcome", ""),
                    "reason_code": detail.get("reason_code") or "",
                    "message": _clip(detail.get("message") or "", MESSAGE_CHARS),
                }
            )
        elif step["kind"] == StepKind.RESUME:
            for decided in detail.get("decided", []):
                calls.append(
                    {
                        "turn": step["turn"],
                        "tool": decided.get("tool", ""),
                        "outcome": decided.get("outcome", ""),
                        "reason_code": f"approval_{decided['approval']}" if decided.get("approval") else "",
                        "message": "After a person decided the approval request.",
                    }
                )
    return calls[-MAX_TOOL_CALLS:]


# --- Why, how urgent, in short -----------------------------------------------------------------


def _reason(code: str, outcome, *, turn, agent, sentiment, topics, turns) -> str:
    """One sentence a person can act on, specific to the trigger that fired."""
    said = _quote(turn.input)
    if code == "human_request":
        return f"The customer asked for a person: {said}."
    if code == "topic" and topics:
        named = "; ".join(f"“{topic}” (the word “{word}”)" for topic, word in topics)
        return f"The customer's message names a topic this agent hands to people: {named}. They wrote {said}."
    if code == "negative_sentiment":
        cues = ", ".join(sentiment.get("cues") or []) or "no single cue"
        return (
            f"The customer is upset (sentiment score {sentiment.get('score')}, from {cues}; "
            f"{decisions.NEGATIVE_SENTIMENT_SCORE} or more counts as upset). They wrote {said}."
        )
    if code == "repeated_failure":
        earlier = []
        for row in reversed([row for row in turns if row["id"] != turn.pk]):
            if row["decision"] != Decision.FALLBACK:
                break
            earlier.append(f"turn {row['number']} {row['decision_reason']}")
        in_a_row = len(earlier) + 1
        before = f" Earlier: {', '.join(reversed(earlier))}." if earlier else ""
        return (
            f"The agent could not give an approved answer {in_a_row} times in a row (it hands over after "
            f"{agent.escalate_after_fallbacks}).{before} The last question: {said}."
        )
    if code == "low_confidence":
        confidence = f"{outcome.confidence:.0%}" if outcome.confidence is not None else "too little"
        return (
            f"The agent's answer cited sources covering only {confidence} of the question, below its "
            f"{float(agent.confidence_threshold or 0):.0%} threshold, so the answer was not sent. The question: {said}."
        )
    if code == "step_limit":
        return (
            f"The turn used all {agent.max_steps_per_turn} model calls the agent may make per turn without an "
            f"answer (limit: max model calls per turn). The request: {said}."
        )
    if code == "cost_limit":
        return (
            f"The turn cost {turn.cost:.4f}, reaching the agent's limit of {agent.max_cost_per_turn} per turn "
            f"(limit: max cost per turn), before it could answer. The request: {said}."
        )
    trigger = outcome.escalation_trigger
    why = trigger.why if trigger else f"The agent could not complete the turn ({code})."
    return f"{why} The request: {said}."


def _urgency(fired, sentiment: dict) -> str:
    """Normal, one step up for an upset customer, one more for a topic handed to people."""
    level = 1
    if sentiment.get("label") == "negative":
        level += 1
    if any(trigger.name == "topic" for trigger in fired):
        level += 1
    return PRIORITY_ORDER[min(level, len(PRIORITY_ORDER) - 1)]


def _summary(agent, conversation, turn, code: str, package: dict) -> str:
    lines = [
        f"{agent.name} handed over turn {turn.number} on {conversation.channel} ({code}).",
        f"Customer's latest message: {_quote(turn.input)}.",
    ]
    calls = package["tool_calls"]
    if calls:
        lines.append("Tools tried: " + "; ".join(f"{call['tool']} {call['outcome']}" for call in calls) + ".")
    sources = package["sources"]
    if sources:
        titles = [source["title"] + (" (cited)" if source["cited"] else "") for source in sources]
        lines.append("Sources found: " + "; ".join(titles) + ".")
    context = package["account_context"]
    if context.get("earlier_conversation_count") or context.get("earlier_handoff_count"):
        lines.append(
            f"Earlier with this customer: {context['earlier_conversation_count']} conversation(s), "
            f"{context['earlier_handoff_count']} handoff(s)."
        )
    return "\n".join(lines)
