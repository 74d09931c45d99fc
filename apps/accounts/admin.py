from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from . import services
from .admin_scoping import ReadOnlyHistoryAdmin, TenantScopedHistoryAdmin
from .models import ApiToken, Membership, Role, Tenant, User
from .permissions import has_tenant_permission, tenant_ids_with_permission


@admin.register(Tenant)
class TenantAdmin(ReadOnlyHistoryAdmin):
    list_display = ["name", "slug", "is_active", "created_at"]
    search_fields = ["name", "slug"]
    list_filter = ["is_active"]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        allowed = tenant_ids_with_permission(request.user, "accounts.view_tenant")
        return queryset if allowed is None else queryset.filter(pk__in=allowed)

    def has_view_permission(self, request, obj=None):
        # Per object too: the history page shows a tenant that is outside get_queryset.
        return super().has_view_permission(request, obj) and (
            obj is None or has_tenant_permission(request.user, obj.pk, "accounts.view_tenant")
        )

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        # A new tenant comes with its default roles, each accepting "<slug>:<role>".
        created = services.create_tenant(name=obj.name, slug=obj.slug)
        obj.pk = created.pk


class RoleMembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "source", "created_at"]
    readonly_fields = ["source", "created_at"]
    autocomplete_fields = ["user"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Role)
class RoleAdmin(TenantScopedHistoryAdmin):
    list_display = ["name", "tenant", "kind", "idp_group_names", "member_count"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter), "kind"]
    list_select_related = ["tenant"]
    search_fields = ["name", "tenant__name"]
    readonly_fields = ["created_at"]
    fields = ["tenant", "kind", "name", "description", "idp_groups", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        # What a role is allowed to do follows its kind; changing the kind of a role in use
        # would silently change everyone's access, so the kind is fixed once created.
        return [*self.readonly_fields, "tenant", "kind"] if obj else self.readonly_fields

    def get_queryset(self, request):
        from django.db.models import Count

        return super().get_queryset(request).annotate(members=Count("memberships"))

    @admin.display(description="IdP groups")
    def idp_group_names(self, role):
        return ", ".join(role.idp_groups) or "—"

    @admin.display(description="Members", ordering="members")
    def member_count(self, role):
        return role.members


@admin.register(Membership)
class MembershipAdmin(TenantScopedHistoryAdmin):
    tenant_path = "role__tenant"
    list_display = ["user", "role", "tenant_name", "source", "created_at"]
    list_filter = [("role__tenant", admin.RelatedOnlyFieldListFilter), "role__kind", "source"]
    list_select_related = ["user", "role__tenant"]
    search_fields = ["user__username", "user__email", "role__name"]
    autocomplete_fields = ["user"]
    fields = ["user", "role", "source", "created_at"]
    readonly_fields = ["source", "created_at"]

    @admin.display(description="Tenant", ordering="role__tenant__name")
    def tenant_name(self, membership):
        return membership.role.tenant.name

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "user", "role"] if obj else self.readonly_fields

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "role":
            kwargs["queryset"] = Role.objects.filter(tenant__in=self.tenants_for(request)).select_related("tenant")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:
            return
        try:
            saved = services.assign_role(user=obj.user, role=obj.role, by=request.user)
        except PermissionDenied as error:
            messages.error(request, str(error))
            raise
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        services.remove_membership(membership=obj, by=request.user)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for membership in queryset.select_related("role", "user"):
                services.remove_membership(membership=membership, by=request.user)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["role", "source", "created_at"]
    readonly_fields = ["role", "source", "created_at"]
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        allowed = tenant_ids_with_permission(request.user, "accounts.view_membership")
        queryset = super().get_queryset(request).select_related("role__tenant")
        return queryset if allowed is None else queryset.filter(role__tenant__in=allowed)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "display_name", "email", "is_staff", "is_active", "last_login"]
    # Filters list only tenants present in the rows this user may see (never other tenants' names).
    list_filter = [
        "is_staff",
        "is_superuser",
        "is_active",
        ("memberships__role__tenant", admin.RelatedOnlyFieldListFilter),
        "memberships__role__kind",
    ]
    search_fields = ["username", "email", "display_name", "first_name", "last_name"]
    inlines = [MembershipInline]
    fieldsets = [
        (None, {"fields": ["username", "password"]}),
        ("Person", {"fields": ["display_name", "first_name", "last_name", "email"]}),
        (
            "Access",
            {
                "fields": ["is_active", "is_staff", "is_superuser"],
                "description": "Admin access follows the roles a person holds; assign roles under Memberships.",
            },
        ),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    readonly_fields = ["is_staff", "last_login", "date_joined"]

    def get_readonly_fields(self, request, obj=None):
        if request.user.is_superuser:
            return self.readonly_fields
        return [*self.readonly_fields, "is_superuser"]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        allowed = tenant_ids_with_permission(request.user, "accounts.view_user")
        if allowed is None:
            return queryset
        return queryset.filter(memberships__role__tenant__in=allowed).distinct()

    def has_add_permission(self, request):
        # New people arrive through single sign-on, or are created by a platform
        # administrator; tenant administrators then give them roles.
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        """A tenant administrator edits (and resets the password of) only people who
        belong to their tenants alone: someone who also works for another tenant, or a
        platform administrator, is not theirs to take over."""
        allowed_for_model = super().has_change_permission(request, obj)
        if not allowed_for_model or obj is None or request.user.is_superuser:
            return allowed_for_model
        if obj.is_superuser:
            return False
        allowed = tenant_ids_with_permission(request.user, "accounts.change_user") or set()
        tenant_ids = set(obj.memberships.values_list("role__tenant_id", flat=True))
        return bool(tenant_ids) and tenant_ids <= allowed


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name", "expires_at"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ["name", "user", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_select_related = ["user"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__username", "prefix"]
    autocomplete_fields = ["user"]
    actions = ["revoke_tokens"]

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        token, raw_token = services.create_api_token(user=obj.user, name=obj.name, expires_at=obj.expires_at)
        obj.pk = token.pk
        messages.warning(
            request,
            f"API token for {token.user}: {raw_token} — copy it now; it is stored only as a digest and "
            "will not be shown again.",
        )

    @admin.action(description="Revoke selected tokens")
    def revoke_tokens(self, request, queryset):
        now = timezone.now()
        count = 0
        for token in queryset.filter(revoked_at__isnull=True):
            services.revoke_api_token(token=token)
            count += 1
        messages.success(request, f"Revoked {count} token(s) at {now:%Y-%m-%d %H:%M} UTC.")
