from django.db import models


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Waiting for a decision"
    APPROVED = "approved", "Approved, not yet executed"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    EXECUTING = "executing", "Executing"
    EXECUTED = "executed", "Executed"
    FAILED = "failed", "Approved, execution failed"
    VOIDED = "voided", "Voided (the action changed or may no longer run)"


# The tools app's risk tiers, least first, for the queue's filter (approvals sits below tools
# in the stack; tests/approvals keep the two the same).
RISK_TIERS = ("low", "medium", "high", "critical")

DECIDABLE_STATUSES = (ApprovalStatus.PENDING,)
# Approved, and the action is about to run or running: pages poll until it is done.
IN_FLIGHT_STATUSES = (ApprovalStatus.APPROVED, ApprovalStatus.EXECUTING)
