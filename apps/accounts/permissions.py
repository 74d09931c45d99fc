"""One place that decides what a user may see or do, tenant by tenant.

Django's model permissions are global; this control plane's are per tenant. A user who
is a knowledge owner at Acme and a support agent at Globex may edit Acme's knowledge and
only read Globex's. Pages, the admin and the API all ask the same two questions here:
``tenant_ids_with_permission`` (for querysets, via ``TenantScopedQuerySet.for_user``) and
``has_tenant_permission`` (for one object, re-checked inside the write's transaction).
"""

from collections import defaultdict

from django.db import models

from .role_permissions import role_allows

_CACHE_ATTRIBUTE = "_role_kinds_by_tenant"


def role_kinds_by_tenant(user) -> dict[int, frozenset[str]]:
    """The role kinds a user holds, per tenant id (active tenants only), cached on the user."""
    cached = getattr(user, _CACHE_ATTRIBUTE, None)
    if cached is not None:
        return cached
    from .models import Membership

    kinds: dict[int, set[str]] = defaultdict(set)
    rows = Membership.objects.filter(user_id=user.pk, role__tenant__is_active=True).values_list(
        "role__tenant_id", "role__kind"
    )
    for tenant_id, kind in rows:
        kinds[tenant_id].add(kind)
    result = {tenant_id: frozenset(found) for tenant_id, found in kinds.items()}
    setattr(user, _CACHE_ATTRIBUTE, result)
    return result


def roles_in_tenant(user, tenant_id: int | None) -> list[str]:
    """The role kinds ``user`` holds in one tenant, sorted (what the audit trail records as
    the actor's roles at the time)."""
    if user is None or tenant_id is None or not getattr(user, "is_authenticated", False):
        return []
    return sorted(role_kinds_by_tenant(user).get(tenant_id, ()))


def forget_cached_roles(user) -> None:
    if hasattr(user, _CACHE_ATTRIBUTE):
        delattr(user, _CACHE_ATTRIBUTE)


def tenant_ids_with_permission(user, permission: str) -> set[int] | None:
    """Tenant ids where ``user`` holds ``permission``; None means every tenant (superuser)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return set()
    if user.is_superuser:
        return None
    return {
        tenant_id
        for tenant_id, kinds in role_kinds_by_tenant(user).items()
        if any(role_allows(kind, permission) for kind in kinds)
    }


def has_tenant_permission(user, tenant_id: int, permission: str) -> bool:
    allowed = tenant_ids_with_permission(user, permission)
    return allowed is None or tenant_id in allowed


def permission_name(model: type[models.Model], action: str) -> str:
    """``view`` on Agent -> ``agents.view_agent``; a dotted name is returned unchanged."""
    if "." in action:
        return action
    return f"{model._meta.app_label}.{action}_{model._meta.model_name}"


class TenantScopedQuerySet(models.QuerySet):
    """Querysets of rows that belong to a tenant. ``tenant_field`` names the path to it."""

    tenant_field = "tenant"

    def for_user(self, user, action: str = "view"):
        """The rows ``user`` may ``action`` ("view", "change", or a dotted permission)."""
        allowed = tenant_ids_with_permission(user, permission_name(self.model, action))
        if allowed is None:
            return self
        if not allowed:
            return self.none()
        return self.filter(**{f"{self.tenant_field}__in": allowed})

    def for_tenant(self, tenant_id: int):
        return self.filter(**{f"{self.tenant_field}_id": tenant_id})


def tenants_visible_to(user):
    """Active tenants where ``user`` holds any role (every tenant for a superuser). Used to
    resolve tenant names a user types, so a stranger's tenant reads as "does not exist"."""
    from .models import Tenant

    tenants = Tenant.objects.filter(is_active=True)
    if user is None or not user.is_authenticated:
        return tenants.none()
    if user.is_superuser:
        return tenants
    return tenants.filter(pk__in=list(role_kinds_by_tenant(user)))


class AuditAccessPolicy:
    """Tells the audit app (which imports no other app) whose events a user may read."""

    def tenant_ids(self, user, permission: str) -> set[int] | None:
        return tenant_ids_with_permission(user, permission)

    def tenant_names(self, tenant_ids) -> dict[int, str]:
        from .models import Tenant

        return dict(Tenant.objects.filter(pk__in=list(tenant_ids)).values_list("pk", "name"))
