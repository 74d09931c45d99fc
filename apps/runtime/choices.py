from django.db import models


class TurnStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    WAITING_APPROVAL = "waiting", "Waiting for an approval"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    REFUSED = "refused", "Refused"


FINISHED_STATUSES = (TurnStatus.COMPLETED, TurnStatus.FAILED, TurnStatus.REFUSED)


class Decision(models.TextChoices):
    """What the decision layer chose after the model."""

    ANSWER = "answer", "Answer"
    CLARIFY = "clarify", "Clarify"
    FALLBACK = "fallback", "Fallback"
    ESCALATE = "escalate", "Escalate to a person"
    REFUSE = "refuse", "Refuse"


class StepKind(models.TextChoices):
    GUARDRAIL_INPUT = "guardrail_input", "Input guardrails"
    RETRIEVAL = "retrieval", "Knowledge retrieval"
    MODEL_CALL = "model_call", "Model call"
    TOOL_CALL = "tool_call", "Tool call"
    PAUSE = "pause", "Paused for approval"
    RESUME = "resume", "Resumed"
    DECISION = "decision", "Decision"
    GUARDRAIL_OUTPUT = "guardrail_output", "Output guardrails"
    HANDOFF = "handoff", "Handoff"
    LIMIT = "limit", "Limit reached"
    ERROR = "error", "Error"


class ConversationStatus(models.TextChoices):
    OPEN = "open", "Open"
    HANDED_OFF = "handed_off", "Handed to a person"
    CLOSED = "closed", "Closed"
