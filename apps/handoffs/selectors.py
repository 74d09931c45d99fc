"""What the handoff pages and the API read: the handoffs a person may see, filtered and in
due order, with everything a row shows fetched in the same query."""

from datetime import datetime

from django.db.models import Count, F, Q, QuerySet

from apps.accounts.models import Tenant
from apps.accounts.permissions import tenant_ids_with_permission

from .choices import WAITING_STATUSES, SlaState
from .models import Handoff, HandoffQueue

VIEW_PERMISSION = "handoffs.view_handoff"
ALL_STATUSES = "all"
NO_QUEUE = 0  # the queue filter's value for handoffs no queue took


def tenants_allowed(user) -> set[int] | None:
    """Tenants whose handoffs ``user`` may read (None: every tenant)."""
    return tenant_ids_with_permission(user, VIEW_PERMISSION)


def visible_handoffs(user) -> QuerySet[Handoff]:
    return Handoff.objects.for_user(user, "view").select_related("tenant", "agent", "queue", "claimed_by")


def tenant_choices(allowed: set[int] | None) -> list[tuple[int, str]]:
    tenants = Tenant.objects.filter(is_active=True)
    if allowed is not None:
        tenants = tenants.filter(pk__in=allowed)
    return list(tenants.order_by("name").values_list("pk", "name"))


def queue_choices(allowed: set[int] | None) -> list[tuple[int, str]]:
    queues = HandoffQueue.objects.select_related("tenant").order_by("tenant__name", "name")
    if allowed is not None:
        queues = queues.filter(tenant_id__in=allowed)
    rows = list(queues)
    several_tenants = len({queue.tenant_id for queue in rows}) > 1
    return [
        (
            queue.pk,
            (f"{queue.tenant.name} · " if several_tenants else "")
            + queue.name
            + ("" if queue.is_active else " (inactive)"),
        )
        for queue in rows
    ]


def filter_handoffs(queryset: QuerySet[Handoff], filters: dict, *, user, now: datetime) -> QuerySet[Handoff]:
    """``filters`` as HandoffFilterForm cleans them. No status means the handoffs still
    waiting for a person (open or claimed); "all" means every status."""
    status = filters.get("status") or ""
    if status == ALL_STATUSES:
        pass
    elif status:
        queryset = queryset.filter(status=status)
    else:
        queryset = queryset.filter(status__in=WAITING_STATUSES)
    if filters.get("tenant") is not None:
        queryset = queryset.filter(tenant_id=filters["tenant"])
    queue = filters.get("queue")
    if queue == NO_QUEUE:
        queryset = queryset.filter(queue__isnull=True)
    elif queue is not None:
        queryset = queryset.filter(queue_id=queue)
    if filters.get("priority"):
        queryset = queryset.filter(priority=filters["priority"])
    if filters.get("mine"):
        queryset = queryset.filter(claimed_by_id=user.pk)
    sla = filters.get("sla")
    if sla:
        queryset = queryset.filter(_sla_condition(sla, now))
    return queryset


def _sla_condition(state: str, now: datetime) -> Q:
    waiting = Q(status__in=WAITING_STATUSES, due_at__isnull=False)
    if state == SlaState.OVERDUE:
        return waiting & Q(due_at__lte=now)
    if state == SlaState.DUE_SOON:
        return waiting & Q(due_at__gt=now, due_soon_at__lte=now)
    if state == SlaState.ON_TIME:
        return waiting & Q(due_at__gt=now) & (Q(due_soon_at__gt=now) | Q(due_soon_at__isnull=True))
    return ~Q(status__in=WAITING_STATUSES)  # done


def in_due_order(queryset: QuerySet[Handoff]) -> QuerySet[Handoff]:
    """Soonest due first, so overdue handoffs lead; then the oldest."""
    return queryset.order_by(F("due_at").asc(nulls_last=True), "created_at", "pk")


def sla_counts(queryset: QuerySet[Handoff], now: datetime) -> dict[str, int]:
    """How many of these handoffs are overdue, due soon and on time (one query)."""
    return queryset.aggregate(
        **{state: Count("pk", filter=_sla_condition(state, now)) for state in SlaState.values if state != "done"}
    )
