"""The decision layer: after the model, the control plane (not the model) decides whether
the turn answers, asks to clarify, falls back, or hands the conversation to a person.

Escalation triggers are business rules the agent owner configures (admin: Agent, Turn
rules): topics, an explicit request for a person, negative sentiment, repeated fallbacks,
and a grounded answer whose confidence is below the agent's threshold. Every trigger is
considered on every turn and the trace records each one, fired or not, with why.
"""

import re
from dataclasses import dataclass, field
from decimal import Decimal

from apps.knowledge.text import fold

from .choices import Decision

FALLBACK_MESSAGE = (
    "I'm sorry, I don't have an approved answer to that. A member of our team can help: "
    "would you like me to hand this over?"
)
MODEL_FAILURE_MESSAGE = "I'm sorry, I can't answer right now. Please try again in a moment, or ask for a person."
TOOL_FAILURE_MESSAGE = (
    "I'm sorry, I couldn't reach our systems to do that just now, so nothing was changed. Please try again "
    "in a little while, or I can hand this to a member of our team."
)
TOOL_DENIED_MESSAGE = (
    "I'm sorry, that isn't something I'm allowed to do here. A member of our team can help: would you like "
    "me to hand this over?"
)
CLARIFY_MESSAGE = "Could you tell me a little more, for example the order number or which product this is about?"
ESCALATION_MESSAGE = "I'm handing this to a colleague who can help; they will see everything we discussed here."
LIMIT_MESSAGE = "I'm sorry, this request needs more work than I'm allowed to do on my own. I'm passing it on."

_HUMAN_REQUEST = re.compile(
    r"\b(speak|talk|chat)\s+(to|with)\s+(a\s+|an\s+|some\s*one|somebody|your\s+)?"
    r"(human|person|people|agent|representative|manager|supervisor|real\s+person|someone|somebody)\b"
    r"|\b(real|live|actual)\s+(human|person|agent)\b"
    r"|\bhuman\s+(agent|being|please)\b"
    r"|\btransfer\s+me\b|\bescalate\b|\b(customer\s+service|support)\s+representative\b"
)
_NEGATIVE = {
    "angry": 2, "furious": 3, "outraged": 3, "livid": 3, "terrible": 2, "awful": 2, "horrible": 2, "worst": 2,
    "ridiculous": 2, "unacceptable": 2, "disgusting": 2, "useless": 2, "pathetic": 2, "hate": 2, "scam": 2,
    "fed up": 2, "sick of": 2, "joke": 1, "disappointed": 1, "annoyed": 1, "frustrated": 1, "upset": 1,
    "never again": 2, "rip off": 2, "ripoff": 2, "incompetent": 2,
}  # fmt: skip
NEGATIVE_SENTIMENT_SCORE = 3  # at or above: clearly upset
_CITATION = re.compile(r"\[S(\d{1,2})\]")


@dataclass
class Trigger:
    name: str
    enabled: bool
    fired: bool
    why: str

    def as_dict(self) -> dict:
        return {"trigger": self.name, "enabled": self.enabled, "fired": self.fired, "why": self.why}

    @classmethod
    def from_dict(cls, entry: dict) -> "Trigger":
        return cls(entry["trigger"], entry["enabled"], entry["fired"], entry["why"])


@dataclass
class Sentiment:
    label: str  # negative | neutral
    score: int
    cues: list[str]


@dataclass
class Outcome:
    decision: str
    reason: str  # a code: grounded, tool_result, knowledge_gap, ...
    message: str  # what the person is told
    confidence: float | None
    cited: list[int] = field(default_factory=list)  # source labels cited (1-based)
    triggers: list[Trigger] = field(default_factory=list)

    @property
    def escalation_trigger(self) -> Trigger | None:
        return next((trigger for trigger in self.triggers if trigger.fired), None)


def sentiment_of(text: str) -> Sentiment:
    """A small lexicon score: enough to notice a customer who is clearly upset, never used
    for anything but deciding whether a person should take over."""
    folded = fold(text)
    cues = [cue for cue in _NEGATIVE if re.search(rf"\b{re.escape(cue)}\b", folded)]
    score = sum(_NEGATIVE[cue] for cue in cues)
    letters = [char for char in text if char.isalpha()]
    shouting = len(letters) > 12 and sum(char.isupper() for char in letters) > 0.6 * len(letters)
    if text.count("!") >= 2 or shouting:
        score += 1
        cues.append("shouting")
    return Sentiment("negative" if score >= NEGATIVE_SENTIMENT_SCORE else "neutral", score, cues)


def input_triggers(agent, text: str, sentiment: Sentiment) -> list[Trigger]:
    """The triggers the message alone can fire: checked before the model, so a message that
    must go to a person costs no model call."""
    folded = fold(text)
    topics = agent.escalation_topics or {}
    topic_hits = [topic for topic, _word in topic_matches(agent, text)]
    asked = bool(_HUMAN_REQUEST.search(folded))
    return [
        Trigger(
            "human_request",
            agent.escalate_on_request,
            agent.escalate_on_request and asked,
            "The customer asked for a person." if asked else "No request for a person.",
        ),
        Trigger(
            "topic",
            bool(topics),
            bool(topic_hits),
            f"Names a topic handed to people: {', '.join(topic_hits)}."
            if topic_hits
            else f"None of the configured topics ({', '.join(topics) or 'none'}).",
        ),
        Trigger(
            "negative_sentiment",
            agent.escalate_on_negative_sentiment,
            agent.escalate_on_negative_sentiment and sentiment.label == "negative",
            f"Sentiment score {sentiment.score} ({', '.join(sentiment.cues) or 'no cues'}); "
            f"{NEGATIVE_SENTIMENT_SCORE} or more counts as upset.",
        ),
    ]


def topic_matches(agent, text: str) -> list[tuple[str, str]]:
    """(topic, the configured word that named it) for each of the agent's escalation topics
    the text names, in the agent's order."""
    folded = fold(text)
    found = []
    for topic, words in (agent.escalation_topics or {}).items():
        word = next((word for word in words if re.search(rf"\b{re.escape(fold(word))}", folded)), None)
        if word is not None:
            found.append((topic, word))
    return found


def cited_labels(content: str, passage_count: int) -> list[int]:
    """The source labels ([S1], [S2]...) the answer cites that were actually offered."""
    labels = {int(number) for number in _CITATION.findall(content or "")}
    return sorted(label for label in labels if 1 <= label <= passage_count)


def decide(
    *,
    agent,
    content: str,
    passages: list,
    retrieval_status: str,
    tool_outcomes: list[str],
    earlier_fallbacks: int,
    triggers: list[Trigger],
    conflicts: list | tuple = (),
) -> Outcome:
    """Decide after the model answered. ``passages`` are the turn's retrieved passages in
    label order, ``tool_outcomes`` the gateway outcomes of this turn's calls,
    ``earlier_fallbacks`` how many turns in a row before this one fell back, and
    ``conflicts`` pairs of passage labels whose sources disagree (an open conflict hint)."""
    triggers = list(triggers)
    cited = cited_labels(content, len(passages))
    if conflicts:
        triggers.append(source_conflict(cited, conflicts, passages))
    confidence = max((passages[label - 1].coverage for label in cited), default=None)
    threshold = float(agent.confidence_threshold or Decimal(0))
    if cited:
        low = confidence < threshold
        triggers.append(
            Trigger(
                "low_confidence",
                True,
                low,
                f"Cited sources cover {confidence:.0%} of the question; the threshold is {threshold:.0%}.",
            )
        )
        outcome = Outcome(Decision.ANSWER, "grounded", content, confidence, cited)
    elif "executed" in tool_outcomes and content.strip():
        triggers.append(Trigger("low_confidence", True, False, "Answer rests on a business system's result."))
        outcome = Outcome(Decision.ANSWER, "tool_result", content, 1.0)
    elif any(outcome in ("proposed", "suggested") for outcome in tool_outcomes) and content.strip():
        triggers.append(Trigger("low_confidence", True, False, "Proposes an action for a person to take."))
        outcome = Outcome(Decision.ANSWER, "proposed_action", content, None)
    elif "failed" in tool_outcomes:
        # Whatever the model made of it, the customer hears that the system failed, not a
        # request for details they already gave, nor an answer built on a result never read.
        triggers.append(Trigger("low_confidence", True, False, "A business system failed; nothing rests on it."))
        outcome = Outcome(Decision.FALLBACK, "tool_failed", TOOL_FAILURE_MESSAGE, 0.0)
    elif "denied" in tool_outcomes:
        triggers.append(Trigger("low_confidence", True, False, "The action was not allowed here."))
        outcome = Outcome(Decision.FALLBACK, "tool_denied", TOOL_DENIED_MESSAGE, 0.0)
    elif content.strip().endswith("?"):
        triggers.append(Trigger("low_confidence", False, False, "A question back, not an answer."))
        outcome = Outcome(Decision.CLARIFY, "model_asked", content, None)
    elif retrieval_status == "weak":
        triggers.append(Trigger("low_confidence", True, False, "No source answered well enough to use."))
        outcome = Outcome(Decision.CLARIFY, "weak_match", CLARIFY_MESSAGE, None)
    else:
        reason = "knowledge_gap" if retrieval_status == "gap" else "ungrounded"
        why = (
            "No approved source matched the question."
            if reason == "knowledge_gap"
            else "The model's answer cited no approved source, so it is not shown."
        )
        triggers.append(Trigger("low_confidence", True, False, why))
        outcome = Outcome(Decision.FALLBACK, reason, FALLBACK_MESSAGE, 0.0)
    triggers.append(repeated_failure(agent, earlier_fallbacks, outcome.decision == Decision.FALLBACK))
    outcome.triggers = triggers
    fired = outcome.escalation_trigger
    if fired is not None:
        outcome.decision, outcome.reason, outcome.message = Decision.ESCALATE, fired.name, ESCALATION_MESSAGE
    return outcome


def source_conflict(cited: list[int], conflicts, passages: list) -> Trigger:
    """Fires when the answer cites a source that an open conflict hint pairs with another
    source retrieved for the same question: two approved versions of one truth, and only
    their owners can say which is right, so a person answers meanwhile."""
    clashing = sorted({label for pair in conflicts for label in pair if set(pair) & set(cited)})
    if not clashing:
        return Trigger("source_conflict", True, False, "No cited source disagrees with another retrieved one.")
    titles = ", ".join(f"“{passages[label - 1].source_title}”" for label in clashing if label <= len(passages))
    return Trigger("source_conflict", True, True, f"The answer rests on sources that disagree: {titles}.")


def repeated_failure(agent, earlier_fallbacks: int, this_one_failed: bool) -> Trigger:
    limit = agent.escalate_after_fallbacks
    in_a_row = earlier_fallbacks + (1 if this_one_failed else 0)
    fired = bool(limit) and this_one_failed and in_a_row >= limit
    return Trigger(
        "repeated_failure",
        bool(limit),
        fired,
        f"{in_a_row} fallback(s) in a row; {limit or 'no'} limit." if limit else "Not configured.",
    )


def escalate_before_model(triggers: list[Trigger]) -> Outcome | None:
    """An input trigger that fired decides the turn before any model cost."""
    fired = next((trigger for trigger in triggers if trigger.fired), None)
    if fired is None:
        return None
    return Outcome(Decision.ESCALATE, fired.name, ESCALATION_MESSAGE, None, triggers=list(triggers))
