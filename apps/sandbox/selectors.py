"""What the sandbox overview page reads: per tenant, the latest rows of each pretend system."""

from dataclasses import dataclass

from django.conf import settings

from apps.accounts.models import Tenant
from apps.accounts.permissions import role_kinds_by_tenant

from .models import SandboxCrmNote, SandboxCustomer, SandboxEmail, SandboxOrder, SandboxRefund

RECENT = 10


@dataclass
class SandboxActivity:
    tenant: Tenant
    base_url: str
    orders: list[SandboxOrder]
    refunds: list[SandboxRefund]
    notes: list[SandboxCrmNote]
    emails: list[SandboxEmail]
    deleted_customers: list[SandboxCustomer]


def visible_tenants(user) -> list[Tenant]:
    """Tenants with a sandbox that ``user`` holds a role in (a superuser: all of them)."""
    tenants = Tenant.objects.filter(sandbox_account__isnull=False).order_by("name")
    if not user.is_superuser:
        tenants = tenants.filter(pk__in=list(role_kinds_by_tenant(user)))
    return list(tenants)


def recent_activity(tenant: Tenant) -> SandboxActivity:
    return SandboxActivity(
        tenant=tenant,
        base_url=f"{settings.CONTROLPLANE_BASE_URL}/sandbox/{tenant.slug}",
        orders=list(SandboxOrder.objects.filter(tenant=tenant)[:RECENT]),
        refunds=list(SandboxRefund.objects.filter(tenant=tenant).select_related("order")[:RECENT]),
        notes=list(SandboxCrmNote.objects.filter(tenant=tenant)[:RECENT]),
        emails=list(SandboxEmail.objects.filter(tenant=tenant)[:RECENT]),
        deleted_customers=list(
            SandboxCustomer.objects.filter(tenant=tenant, deleted_at__isnull=False).order_by("-deleted_at")[:RECENT]
        ),
    )
