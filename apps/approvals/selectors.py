"""What the approval pages and the API read: the queue a person may see, one request with
what a careful approver needs beside it, and the approval-fatigue signals per tool."""

import datetime
import statistics
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.accounts.models import Tenant
from apps.agents.models import Agent

from . import rules
from .choices import ApprovalStatus
from .models import ApprovalDecision, ApprovalRequest

DUE_SOON = datetime.timedelta(minutes=15)
EARLIER_FOR_CUSTOMER = 10
# What the queue's rows show: the heavy columns (arguments, context, result) stay behind.
QUEUE_COLUMNS = (
    "id",
    "tenant__name",
    "tenant__slug",
    "agent__name",
    "tool_name",
    "risk_tier",
    "amount",
    "subject",
    "subject_verified",
    "channel",
    "rule",
    "status",
    "created_at",
    "due_at",
    "expires_at",
    "approvals_required",
    "requested_by__username",
    "requested_by__display_name",
)


class SlaStatus:
    ON_TIME = "on_time"
    DUE_SOON = "due_soon"
    OVERDUE = "overdue"
    EXPIRED = "expired"
    CLOSED = "closed"

    LABELS = {
        ON_TIME: "On time",
        DUE_SOON: "Due soon",
        OVERDUE: "Overdue (in grace period)",
        EXPIRED: "Expired",
        CLOSED: "Decided",
    }


def sla_status(status: str, due_at, expires_at, now=None) -> str:
    now = now or timezone.now()
    if status == ApprovalStatus.EXPIRED:
        return SlaStatus.EXPIRED
    if status != ApprovalStatus.PENDING:
        return SlaStatus.CLOSED
    if now >= expires_at:
        return SlaStatus.EXPIRED
    if now >= due_at:
        return SlaStatus.OVERDUE
    if due_at - now <= DUE_SOON:
        return SlaStatus.DUE_SOON
    return SlaStatus.ON_TIME


def visible_to(user) -> QuerySet[ApprovalRequest]:
    return ApprovalRequest.objects.for_user(user, "approvals.view_approvalrequest")


@dataclass
class QueueFilters:
    status: str = ApprovalStatus.PENDING  # "" for every status
    tenant: str = ""  # slug
    agent: int | None = None
    tool: str = ""
    risk_tier: str = ""
    overdue: bool = False


def approvals_given():
    """The approvals a request has had so far, as a correlated subquery: PostgreSQL works it
    out only for the rows a page returns, where a joined COUNT would group every matching
    row before the sort and the limit (and the pager's count would pay for it too)."""
    given = (
        ApprovalDecision.objects.filter(request=OuterRef("pk"), approve=True)
        .order_by()
        .values("request")
        .annotate(total=Count("pk"))
        .values("total")
    )
    return Coalesce(Subquery(given), 0)


def queue(user, filters: QueueFilters, *, now=None) -> QuerySet[ApprovalRequest]:
    """The requests ``user`` may see, filtered, the most urgent first (pending ones by SLA
    due; decided ones most recent first), with the approvals given so far."""
    now = now or timezone.now()
    rows = visible_to(user)
    if filters.status:
        rows = rows.filter(status=filters.status)
    if filters.tenant:
        rows = rows.filter(tenant__slug=filters.tenant)
    if filters.agent:
        rows = rows.filter(agent_id=filters.agent)
    if filters.tool:
        rows = rows.filter(tool_name=filters.tool)
    if filters.risk_tier:
        rows = rows.filter(risk_tier=filters.risk_tier)
    if filters.overdue:
        rows = rows.filter(status=ApprovalStatus.PENDING, due_at__lte=now)
    ordering = ["due_at", "id"] if filters.status == ApprovalStatus.PENDING else ["-created_at", "-id"]
    return (
        rows.annotate(approvals_given=approvals_given())
        .select_related("tenant", "agent", "requested_by")
        .only(*QUEUE_COLUMNS)
        .order_by(*ordering)
    )


@dataclass
class QueueRow:
    request: ApprovalRequest
    sla: str
    may_decide: bool

    @property
    def sla_label(self) -> str:
        return SlaStatus.LABELS[self.sla]


def queue_rows(user, requests: list[ApprovalRequest], *, now=None) -> list[QueueRow]:
    """Rows for one page: SLA status and whether ``user`` may decide each, in two queries
    for the whole page (the approver rule), never one per row."""
    now = now or timezone.now()
    refusals = rules.refusals(user, requests)
    return [
        QueueRow(
            request,
            sla_status(request.status, request.due_at, request.expires_at, now),
            request.status == ApprovalStatus.PENDING and not refusals[request.pk],
        )
        for request in requests
    ]


def filter_choices(user) -> dict:
    """What the queue's filters offer: the tenants, agents and tools among the requests the
    person may see (a few small queries, independent of how many requests there are)."""
    tenant_ids = visible_to(user).values("tenant_id")
    return {
        "tenants": list(Tenant.objects.filter(pk__in=tenant_ids).order_by("name").values_list("slug", "name")),
        "agents": list(Agent.objects.filter(tenant_id__in=tenant_ids).order_by("name").values_list("pk", "name")),
        "tools": list(
            visible_to(user)
            .filter(status=ApprovalStatus.PENDING)
            .order_by("tool_name")
            .values_list("tool_name", flat=True)
            .distinct()
        ),
    }


def request_for_page(user, request_id: int) -> ApprovalRequest:
    """One request the person may see, with its decisions and who made them."""
    return (
        visible_to(user)
        .select_related("tenant", "agent", "requested_by")
        .prefetch_related(
            Prefetch("decisions", queryset=ApprovalDecision.objects.select_related("approver").order_by("created_at"))
        )
        .get(pk=request_id)
    )


def earlier_for_customer(request: ApprovalRequest, limit: int = EARLIER_FOR_CUSTOMER) -> list[ApprovalRequest]:
    """Earlier requests for the same customer in the same tenant, newest first."""
    if not request.subject:
        return []
    return list(
        ApprovalRequest.objects.filter(tenant_id=request.tenant_id, subject=request.subject)
        .exclude(pk=request.pk)
        .filter(created_at__lte=request.created_at)
        .select_related("agent")
        .only("id", "tool_name", "amount", "status", "created_at", "decided_at", "outcome_note", "agent__name")
        .order_by("-created_at")[:limit]
    )


# --- Approval fatigue ------------------------------------------------------------------------


@dataclass
class ToolSignal:
    tenant_name: str
    tool_name: str
    decided: int
    approved: int
    rejected: int
    expired: int
    median_minutes: float | None

    @property
    def approval_rate(self) -> float | None:
        return self.approved / self.decided if self.decided else None

    @property
    def suggest_lower_gate(self) -> bool:
        """Approved nearly always, over enough decisions to mean something: the gate costs
        people's attention without catching anything. A suggestion; security decides."""
        return (
            self.decided >= settings.APPROVAL_FATIGUE_MIN_SAMPLE
            and self.approval_rate is not None
            and self.approval_rate > settings.APPROVAL_FATIGUE_RATE
        )


def fatigue_signals(user, *, days: int | None = None, now=None) -> list[ToolSignal]:
    """Per tenant and tool, over the last ``days``: requests decided by people, the share
    approved, how many expired undecided, and the median minutes from request to decision."""
    days = days or settings.APPROVAL_FATIGUE_DAYS
    since = (now or timezone.now()) - datetime.timedelta(days=days)
    rows = (
        visible_to(user)
        .filter(created_at__gte=since)
        .filter(Q(decided_at__isnull=False) | Q(status=ApprovalStatus.EXPIRED))
        .values_list("tenant__name", "tool_name", "status", "created_at", "decided_at")
    )
    grouped: dict[tuple[str, str], dict] = {}
    for tenant_name, tool_name, status, created_at, decided_at in rows.iterator():
        entry = grouped.setdefault((tenant_name, tool_name), {"approved": 0, "rejected": 0, "expired": 0, "waits": []})
        if status == ApprovalStatus.EXPIRED:
            entry["expired"] += 1
            continue
        entry["rejected" if status == ApprovalStatus.REJECTED else "approved"] += 1
        entry["waits"].append((decided_at - created_at).total_seconds() / 60)
    return [
        ToolSignal(
            tenant_name,
            tool_name,
            decided=entry["approved"] + entry["rejected"],
            approved=entry["approved"],
            rejected=entry["rejected"],
            expired=entry["expired"],
            median_minutes=round(statistics.median(entry["waits"]), 1) if entry["waits"] else None,
        )
        for (tenant_name, tool_name), entry in sorted(grouped.items())
    ]
