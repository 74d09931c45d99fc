"""Event types of the audit trail. Other apps may record further dotted names; these are
the ones the product writes and the pages offer as filters."""

from django.db import models


class EventType(models.TextChoices):
    TURN_RECEIVED = "turn.received", "Turn received"
    TURN_COMPLETED = "turn.completed", "Turn completed"
    TURN_REFUSED = "turn.refused", "Turn refused"
    GUARDRAIL_VERDICT = "guardrail.verdict", "Guardrail verdict"
    KNOWLEDGE_RETRIEVED = "knowledge.retrieved", "Knowledge retrieved"
    MODEL_CALLED = "model.called", "Model called"
    TOOL_REQUESTED = "tool.requested", "Tool requested"
    TOOL_EXECUTED = "tool.executed", "Tool executed"
    TOOL_FAILED = "tool.failed", "Tool failed"
    APPROVAL_REQUESTED = "approval.requested", "Approval requested"
    APPROVAL_DECIDED = "approval.decided", "Approval decided"
    APPROVAL_EXPIRED = "approval.expired", "Approval expired"
    HANDOFF_CREATED = "handoff.created", "Handoff created"
    HANDOFF_CLAIMED = "handoff.claimed", "Handoff claimed"
    HANDOFF_RESOLVED = "handoff.resolved", "Handoff resolved"
    HANDOFF_RETURNED = "handoff.returned", "Handoff returned to the agent"
    HANDOFF_ESCALATED = "handoff.escalated", "Handoff escalated (overdue)"
    CONFIG_CHANGED = "config.changed", "Configuration changed"
    AGENT_SUSPENDED = "agent.suspended", "Agent suspended"
    PROMOTION_REFUSED = "agent.promotion_refused", "Promotion refused by a rollout gate"
    EVAL_RUN_COMPLETED = "eval.run_completed", "Evaluation run completed"
    TURN_REVIEWED = "turn.reviewed", "Turn reviewed by a person"
    EXPORT_CREATED = "export.created", "Export created"
    AUDIT_VERIFIED = "audit.verified", "Audit chain verified"
