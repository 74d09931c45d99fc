from django.db import models


class HandoffStatus(models.TextChoices):
    OPEN = "open", "Open"
    CLAIMED = "claimed", "Claimed"
    RESOLVED = "resolved", "Resolved"
    RETURNED = "returned", "Returned to the agent"


# A person still owes the customer an answer: these count against the SLA and escalate.
WAITING_STATUSES = (HandoffStatus.OPEN, HandoffStatus.CLAIMED)


class TicketPriority(models.TextChoices):
    LOW = "low", "Low"
    NORMAL = "normal", "Normal"
    HIGH = "high", "High"
    URGENT = "urgent", "Urgent"


# Lowest to highest: escalation moves a handoff one step up, never past the top.
PRIORITY_ORDER = (TicketPriority.LOW, TicketPriority.NORMAL, TicketPriority.HIGH, TicketPriority.URGENT)

# A queue's SLA is for normal priority; the others scale it (documented in docs/handoffs.md).
SLA_FACTORS = {
    TicketPriority.LOW: 2.0,
    TicketPriority.NORMAL: 1.0,
    TicketPriority.HIGH: 0.5,
    TicketPriority.URGENT: 0.25,
}

# A handoff no queue takes is still due: this many minutes at normal priority.
UNQUEUED_SLA_MINUTES = 60


class SlaState(models.TextChoices):
    ON_TIME = "on_time", "On time"
    DUE_SOON = "due_soon", "Due soon"
    OVERDUE = "overdue", "Overdue"
    DONE = "done", "Done"  # resolved or returned: no longer counted


class TicketStatus(models.TextChoices):
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"
