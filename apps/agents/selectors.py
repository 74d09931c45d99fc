"""What pages and the API read about agents, with related rows chosen once."""

from django.db.models import Q, QuerySet

from apps.accounts.models import User
from apps.accounts.permissions import tenant_ids_with_permission

from .models import Agent, KillSwitch


def agents_visible_to(user: User) -> QuerySet[Agent]:
    return Agent.objects.for_user(user, "view").with_inventory_relations().order_by("tenant__name", "name")


def kill_switches_visible_to(user: User) -> list[KillSwitch]:
    """The global switch and the switches of tenants the user can see agents in (whether or
    not the tenant has any agents yet)."""
    switches = KillSwitch.objects.select_related("tenant", "changed_by")
    allowed = tenant_ids_with_permission(user, "agents.view_agent")
    if allowed is None:
        return list(switches)
    return list(switches.filter(Q(tenant__isnull=True) | Q(tenant__in=allowed)))
