"""Tenant scoping for admin pages: a user sees and edits only the rows of tenants where
one of their roles allows it. Django's own model permissions (through the role groups)
decide which pages appear at all; this decides which rows, per tenant."""

from django.core.exceptions import PermissionDenied
from django.db.models import Q
from simple_history.admin import SimpleHistoryAdmin

from .models import Tenant, User
from .permissions import has_tenant_permission, permission_name, tenant_ids_with_permission


def _follow(obj, path: str):
    for part in path.split("__"):
        if obj is None:
            return None
        obj = getattr(obj, part)
    return obj


class RecordOnlyAdminMixin:
    """For records the system writes (conversations, turns, approval requests): the admin
    shows them and changes nothing."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class TenantScopedAdminMixin:
    """Rows are filtered by ``tenant_path``; rows whose tenant is empty (platform-wide,
    e.g. the global kill switch) are readable by anyone who may view the model and
    changeable only by superusers."""

    tenant_path = "tenant"

    def _tenant_id_of(self, obj) -> int | None:
        tenant = _follow(obj, self.tenant_path)
        return tenant.pk if tenant is not None else None

    def _tenant_allows(self, request, obj, action: str) -> bool:
        if obj is None or request.user.is_superuser:
            return True
        tenant_id = self._tenant_id_of(obj)
        if tenant_id is None:
            return action == "view"
        return has_tenant_permission(request.user, tenant_id, permission_name(self.model, action))

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        allowed = tenant_ids_with_permission(request.user, permission_name(self.model, "view"))
        if allowed is None:
            return queryset
        condition = Q(**{f"{self.tenant_path}__in": allowed})
        if self.model._meta.get_field(self.tenant_path.split("__")[0]).null:
            condition |= Q(**{f"{self.tenant_path}__isnull": True})
        return queryset.filter(condition)

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) and (
            self._tenant_allows(request, obj, "view") or self._tenant_allows(request, obj, "change")
        )

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self._tenant_allows(request, obj, "change")

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self._tenant_allows(request, obj, "delete")

    def tenants_for(self, request, action: str = "add"):
        allowed = tenant_ids_with_permission(request.user, permission_name(self.model, action))
        tenants = Tenant.objects.filter(is_active=True)
        return tenants if allowed is None else tenants.filter(pk__in=allowed)

    def people_for(self, request, action: str = "add"):
        """People holding a role in a tenant where the user may ``action`` this model."""
        tenant_ids = self.tenants_for(request, action).values("pk")
        return User.objects.filter(is_active=True, memberships__role__tenant__in=tenant_ids).distinct()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "tenant" and db_field.related_model is Tenant:
            kwargs["queryset"] = self.tenants_for(request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ReadOnlyHistoryAdmin(SimpleHistoryAdmin):
    """History pages that only show. simple_history's revision page saves a POSTed form
    with no more than view permission (SIMPLE_HISTORY_REVERT_DISABLED only hides the
    button), which would let a reader rewrite rows around the services' checks."""

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        if request.method not in ("GET", "HEAD"):
            raise PermissionDenied("History is read-only: make changes on the object's own page.")
        return super().history_form_view(request, object_id, version_id, extra_context)


class TenantScopedHistoryAdmin(TenantScopedAdminMixin, ReadOnlyHistoryAdmin):
    """A tenant-scoped admin page with the object's full change history."""

    list_per_page = 50
