"""Security's pages for the tool registry: connections (whose secrets are written, never
read), tools with the agents allowed to use them and the grants that let people use them,
grants with the "permissions granted vs used" report, and the record of every tool call.

Every write goes through services.py, which checks the user's role in the tenant, keeps
history and writes the audit event. What the services refuse shows on the form, as the
admin's own validation does.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme

from apps.accounts.admin_actions import ReasonForm, apply_to_each, service_error_text, with_reason
from apps.accounts.admin_scoping import TenantScopedAdminMixin, TenantScopedHistoryAdmin
from apps.accounts.permissions import has_tenant_permission, tenant_ids_with_permission
from apps.agents.models import Agent

from . import selectors, services
from .choices import ConnectionStatus, Effect, Outcome, RiskTier
from .forms import ConnectionForm, GrantForm, ToolForm
from .models import AgentTool, Connection, Grant, Tool, ToolCall
from .selectors import conditions_summary

REASON_TEMPLATE = "admin/tools/confirm_with_reason.html"
COMMANDS_TEMPLATE = "admin/tools/change_form_with_commands.html"
GREY, GREEN, AMBER, RED = "#6b7482", "#17794a", "#9a6700", "#b42318"
TIER_COLOURS = {RiskTier.LOW: GREEN, RiskTier.MEDIUM: AMBER, RiskTier.HIGH: RED, RiskTier.CRITICAL: "#7a1010"}
EFFECT_COLOURS = {Effect.ALLOW: GREEN, Effect.REQUIRE_APPROVAL: AMBER, Effect.DENY: RED}
OUTCOME_COLOURS = {
    Outcome.DENIED: RED,
    Outcome.FAILED: RED,
    Outcome.EXECUTED: GREEN,
    Outcome.NEEDS_APPROVAL: AMBER,
    Outcome.EXECUTING: AMBER,
}


def _badge(colour: str, label: str):
    return format_html('<strong style="color:{}">{}</strong>', colour, label)


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "never"


def _last_call_of(**match) -> Subquery:
    """The newest ToolCall.created_at among calls matching ``match`` (OuterRef-ed)."""
    return Subquery(ToolCall.objects.filter(**match).order_by("-created_at").values("created_at")[:1])


# --- Saving through the services ------------------------------------------------------------


class ServiceRefused(Exception):
    def __init__(self, error: ValidationError | PermissionDenied):
        super().__init__(service_error_text(error))
        self.error = error


class SavedThroughServices:
    """save_model (and save_formset) call services; a refusal is shown on the form.

    Django's admin treats save_model as unable to fail. Here the service may refuse (a rule
    only it checks, a permission in the tenant, a change made by someone else meanwhile), so
    ``call`` turns its refusal into ServiceRefused, which leaves the admin's transaction (the
    tool saved just before its allowlist was refused is rolled back with it), and the same
    POST is shown again with the refusal on the form (ServiceCheckedForm).
    """

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceRefused as refused:
            request.tools_service_refusal = refused.error
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)  # a new class per call
        form.service_refusal = getattr(request, "tools_service_refusal", None)
        return form

    @staticmethod
    def call(operation: Callable, **kwargs):
        try:
            return operation(**kwargs)
        except (ValidationError, PermissionDenied) as error:
            raise ServiceRefused(error) from error


# --- Commands that need a reason: buttons on a change page, and bulk actions -----------------


@dataclass(frozen=True)
class Command:
    verb: str  # on the button
    done: str  # in the success message
    explanation: str
    permission: str  # in the object's tenant; the service checks it again
    run: Callable  # (obj, by, reason) -> obj
    applies: Callable  # (obj) -> bool: whether the button shows


class CommandButtons:
    """Buttons such as "Revoke" on a change page. Each opens a page asking why, then calls
    the service; a POST carrying the reason (the usage report's one-click revoke) acts at
    once and returns to ``next``."""

    commands: dict[str, Command] = {}

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        commands = [
            path(
                f"<path:object_id>/{name}/",
                self.admin_site.admin_view(self.command_view),
                {"name": name},
                name=f"{info[0]}_{info[1]}_{name}",
            )
            for name in self.commands
        ]
        return commands + super().get_urls()

    def _may_run(self, request, obj, command: Command) -> bool:
        return has_tenant_permission(request.user, obj.tenant_id, command.permission)

    def command_view(self, request, object_id, name):
        command = self.commands[name]
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} with that id is visible to you.")
        if not self._may_run(request, obj, command):
            raise PermissionDenied
        change_url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk])
        back = request.POST.get("next") or request.GET.get("next") or ""
        if not url_has_allowed_host_and_scheme(back, {request.get_host()}, require_https=request.is_secure()):
            back = change_url
        form = ReasonForm(request.POST or None)
        if request.method == "POST":
            form.fields["reason"].required = False  # the service says why a reason is needed
            form.is_valid()
            try:
                command.run(obj, by=request.user, reason=request.POST.get("reason", ""))
            except ValidationError as error:
                if "reason" not in getattr(error, "message_dict", {}):
                    messages.error(request, f"{obj}: {service_error_text(error)}")
                    return HttpResponseRedirect(back)
                form.add_error("reason", error.message_dict["reason"])
            except PermissionDenied as error:
                messages.error(request, f"{obj}: {service_error_text(error)}")
                return HttpResponseRedirect(back)
            else:
                messages.success(request, f"{command.done}: {obj}.")
                return HttpResponseRedirect(back)
        return TemplateResponse(
            request,
            REASON_TEMPLATE,
            {
                **self.admin_site.each_context(request),
                "title": f"{command.verb}: {obj}",
                "verb": command.verb,
                "explanation": command.explanation,
                "items": [{"pk": obj.pk, "label": str(obj), "detail": obj.tenant.name}],
                "form": form,
                "single": True,
                "next": back,
                "cancel_url": back,
                "opts": self.opts,
            },
        )

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["commands"] = [
                (reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_{name}", args=[obj.pk]), command.verb)
                for name, command in self.commands.items()
                if command.applies(obj) and self._may_run(request, obj, command)
            ]
        return super().render_change_form(request, context, add, change, form_url, obj)

    def bulk_command(self, request, queryset, name: str):
        """An admin action running the command ``name`` on each selected row, asking why first.
        Rows the service refuses (already revoked, another tenant's) are named one by one."""
        command = self.commands[name]
        rows = list(queryset)

        def apply(reason: str) -> None:
            apply_to_each(
                request,
                rows,
                lambda obj: command.run(obj, by=request.user, reason=reason),
                name=str,
                done=command.done,
            )

        return with_reason(
            request,
            self,
            template=REASON_TEMPLATE,
            apply=apply,
            context={
                "title": f"{command.verb}: {len(rows)} {self.opts.verbose_name_plural}",
                "verb": command.verb,
                "explanation": command.explanation,
                "items": [{"pk": obj.pk, "label": str(obj), "detail": obj.tenant.name} for obj in rows],
                "cancel_url": ".",
            },
        )


# --- Connections ----------------------------------------------------------------------------


@admin.register(Connection)
class ConnectionAdmin(SavedThroughServices, CommandButtons, TenantScopedHistoryAdmin):
    form = ConnectionForm
    change_form_template = COMMANDS_TEMPLATE
    list_display = [
        "system",
        "name",
        "tenant",
        "owner",
        "auth_kind",
        "base_url",
        "status_badge",
        "secret_location",
        "last_used",
    ]
    list_filter = ["status", ("tenant", admin.RelatedOnlyFieldListFilter), "auth_kind"]
    list_select_related = ["tenant", "owner"]
    search_fields = ["name", "system", "base_url", "owner__username"]
    actions = ["revoke_selected"]
    readonly_fields = [
        "secret_location",
        "status",
        "status_reason",
        "status_changed_at",
        "status_changed_by",
        "tools_using",
        "last_used",
        "created_at",
    ]
    # The ciphertext is in no fieldset, no column and no history: only connectors read it.
    fieldsets = [
        (None, {"fields": ["tenant", "system", "name", "description", "owner"]}),
        ("How the control plane signs in", {"fields": ["auth_kind", "auth_header", "base_url"]}),
        (
            "Secret",
            {
                "fields": ["secret_location", "secret_env_var", "new_secret_value"],
                "description": "Name an environment variable that holds the secret, or type a value to store it "
                "encrypted. The secret itself is never displayed.",
            },
        ),
        ("Status", {"fields": ["status", "status_reason", "status_changed_at", "status_changed_by"]}),
        ("Use", {"fields": ["tools_using", "last_used"]}),
        ("Record", {"fields": ["reason", "created_at"]}),
    ]
    write_only_fields = ("new_secret_value", "reason")

    commands = {
        "revoke": Command(
            verb="Revoke",
            done="Revoked",
            explanation="Every tool using this connection is blocked from its next call; approvals waiting on "
            "them are voided when they come to run.",
            permission="tools.revoke_connection",
            run=lambda connection, by, reason: services.revoke_connection(connection=connection, by=by, reason=reason),
            applies=lambda connection: connection.status == ConnectionStatus.ACTIVE,
        ),
        "restore": Command(
            verb="Restore",
            done="Restored",
            explanation="Tools using this connection may be called again from their next call.",
            permission="tools.revoke_connection",
            run=lambda connection, by, reason: services.restore_connection(connection=connection, by=by, reason=reason),
            applies=lambda connection: connection.status == ConnectionStatus.REVOKED,
        ),
    }

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(last_used_at=_last_call_of(tool__connection=OuterRef("pk")))

    def get_fieldsets(self, request, obj=None):
        if obj is not None and not self.has_change_permission(request, obj):
            return [
                (title, {**options, "fields": [f for f in options["fields"] if f not in self.write_only_fields]})
                for title, options in self.fieldsets
            ]
        return self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        # A connection never moves between tenants: its tools and audit trail are the tenant's.
        return [*self.readonly_fields, "tenant"] if obj else self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return False  # revoked, not deleted: tool calls and history point at it

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_revoke_permission(self, request):
        return request.user.has_perm("tools.revoke_connection")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "owner":
            kwargs["queryset"] = self.people_for(request, "change").order_by("username")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, connection):
        return _badge(GREEN if connection.is_active else RED, connection.get_status_display())

    @admin.display(description="Secret lives in")
    def secret_location(self, connection):
        return connection.secret_label

    @admin.display(description="Last use", ordering="last_used_at")
    def last_used(self, connection):
        return _when(getattr(connection, "last_used_at", None))

    @admin.display(description="Tools using it")
    def tools_using(self, connection):
        if not connection.pk:
            return "—"
        rows = [(reverse("admin:tools_tool_change", args=[tool.pk]), tool.name) for tool in connection.tools.all()]
        return format_html_join(", ", '<a href="{}">{}</a>', rows) if rows else "None"

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        fields = {name: data[name] for name in services.CONNECTION_FIELDS if name in data}
        if change:
            fields = {name: value for name, value in fields.items() if name in form.changed_data}
        secret = data.get("new_secret_value") or None
        if change and not fields and not secret:
            return
        saved = self.call(
            services.save_connection,
            by=request.user,
            tenant=None if change else data["tenant"],
            connection=obj if change else None,
            secret_value=secret,
            reason=data.get("reason") or "",
            **fields,
        )
        obj.pk = saved.pk
        obj.refresh_from_db()

    @admin.action(description="Revoke selected connections (blocks every tool using them)", permissions=["revoke"])
    def revoke_selected(self, request, queryset):
        return self.bulk_command(request, queryset.select_related("tenant"), "revoke")


# --- Tools and the agents allowed to use them -------------------------------------------------


class AgentToolInline(admin.TabularInline):
    """The agents whose allowlist holds this tool. Added and removed (never re-pointed) through
    services.allow_tool / disallow_tool when the tool's page is saved."""

    model = AgentTool
    extra = 0
    fields = ["agent", "added_by", "added_at"]
    readonly_fields = ["added_by", "added_at"]
    verbose_name = "agent allowed to use this tool"
    verbose_name_plural = "Agents allowed to use this tool (their allowlists)"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("agent", "added_by")

    def _tenant_allows(self, request, obj, permission: str) -> bool:
        return obj is None or has_tenant_permission(request.user, obj.tenant_id, permission)

    def has_add_permission(self, request, obj=None):
        return super().has_add_permission(request, obj) and self._tenant_allows(request, obj, "tools.add_agenttool")

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self._tenant_allows(
            request, obj, "tools.delete_agenttool"
        )

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        if "agent" in formset.form.base_fields:  # a new form class per call: safe to narrow
            if obj is not None:
                agents = Agent.objects.filter(tenant_id=obj.tenant_id)
            else:
                allowed = tenant_ids_with_permission(request.user, "tools.add_agenttool")
                agents = Agent.objects.all() if allowed is None else Agent.objects.filter(tenant__in=allowed)
            formset.form.base_fields["agent"].queryset = agents.order_by("name")
        return formset


@admin.register(Tool)
class ToolAdmin(SavedThroughServices, TenantScopedHistoryAdmin):
    form = ToolForm
    change_form_template = COMMANDS_TEMPLATE
    list_display = [
        "name",
        "tenant",
        "risk_badge",
        "writes",
        "reversible",
        "external_facing",
        "connector",
        "connection_state",
        "is_active",
        "grant_count",
        "last_used",
    ]
    list_filter = [
        "risk_tier",
        "is_active",
        "connector",
        "writes",
        "reversible",
        "external_facing",
        ("tenant", admin.RelatedOnlyFieldListFilter),
        ("connection", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["tenant", "connection"]
    search_fields = ["name", "description"]
    inlines = [AgentToolInline]
    readonly_fields = ["grants_of_tool", "last_used", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "description", "is_active"]}),
        ("Risk", {"fields": ["risk_tier", "writes", "reversible", "external_facing"]}),
        ("Arguments", {"fields": ["argument_schema", "amount_field"]}),
        (
            "How it runs",
            {"fields": ["connector", "builtin", "connection", "http_method", "path_template", "timeout_seconds"]},
        ),
        ("Approval", {"fields": ["approval_sla_minutes", "second_approver_above"]}),
        ("Rate limits", {"fields": ["per_user_per_minute", "per_minute"]}),
        ("Who may use it", {"fields": ["grants_of_tool", "last_used"]}),
        ("Record", {"fields": ["reason", "created_at", "updated_at"]}),
    ]

    def get_queryset(self, request):
        active_grants = (
            Grant.objects.active()
            .filter(tool=OuterRef("pk"))
            .order_by()
            .values("tool")
            .annotate(count=Count("pk"))
            .values("count")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                active_grant_count=Coalesce(Subquery(active_grants, output_field=IntegerField()), Value(0)),
                last_used_at=_last_call_of(tool=OuterRef("pk")),
            )
        )

    def get_fieldsets(self, request, obj=None):
        if obj is not None and not self.has_change_permission(request, obj):
            return [
                (title, {**options, "fields": [f for f in options["fields"] if f != "reason"]})
                for title, options in self.fieldsets
            ]
        return self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "tenant"] if obj else self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return False  # made inactive, not deleted: calls and grants point at it

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "connection":
            kwargs["queryset"] = Connection.objects.filter(tenant__in=self.tenants_for(request, "change")).order_by(
                "system"
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    # --- Columns ------------------------------------------------------------------------------

    @admin.display(description="Risk", ordering="risk_tier")
    def risk_badge(self, tool):
        return _badge(TIER_COLOURS[tool.risk_tier], tool.get_risk_tier_display())

    @admin.display(description="Connection")
    def connection_state(self, tool):
        if tool.connection_id is None:
            return "—"
        if tool.connection.is_active:
            return str(tool.connection)
        return format_html('{} <strong style="color:{}">(revoked)</strong>', tool.connection, RED)

    @admin.display(description="Active grants", ordering="active_grant_count")
    def grant_count(self, tool):
        return tool.active_grant_count

    @admin.display(description="Last used", ordering="last_used_at")
    def last_used(self, tool):
        return _when(getattr(tool, "last_used_at", None))

    @admin.display(description="Grants of this tool")
    def grants_of_tool(self, tool):
        if not tool.pk:
            return "Save the tool first, then grant it to roles."
        grants = tool.grants.select_related("role").order_by("revoked_at", "role__name")
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:tools_grant_change", args=[grant.pk]),
                    grant.role.name,
                    grant.get_effect_display(),
                    conditions_summary(grant),
                    _when(grant.last_used_at),
                    "active" if grant.is_active else f"revoked {_when(grant.revoked_at)}",
                )
                for grant in grants
            ),
        )
        if not rows:
            return "No role holds a grant for this tool."
        return format_html(
            "<table><thead><tr><th>Role</th><th>Effect</th><th>Conditions</th><th>Last used</th><th>State</th>"
            "</tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and has_tenant_permission(request.user, obj.tenant_id, "tools.add_grant"):
            context["commands"] = [(f"{reverse('admin:tools_grant_add')}?tool={obj.pk}", "Grant to a role")]
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- Saving -------------------------------------------------------------------------------

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        fields = {name: data[name] for name in services.TOOL_FIELDS if name in data}
        if change:
            fields = {name: value for name, value in fields.items() if name in form.changed_data}
            if not fields:
                return  # only the allowlist changed: save_formset does that
        saved = self.call(
            services.save_tool,
            by=request.user,
            tenant=None if change else data["tenant"],
            tool=obj if change else None,
            reason=data.get("reason") or "",
            **fields,
        )
        obj.pk = saved.pk
        obj.refresh_from_db()

    def save_formset(self, request, form, formset, change):
        if formset.model is not AgentTool:
            return super().save_formset(request, form, formset, change)
        reason = form.cleaned_data.get("reason") or ""
        formset.save(commit=False)  # collects new_objects and deleted_objects, writes nothing
        for allowance in formset.deleted_objects:
            self.call(services.disallow_tool, allowance=allowance, by=request.user, reason=reason)
        for allowance in formset.new_objects:
            saved = self.call(
                services.allow_tool, agent=allowance.agent, tool=formset.instance, by=request.user, reason=reason
            )
            allowance.pk = saved.pk


# --- Grants and the "granted vs used" report ------------------------------------------------


class GrantStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


def _report_days(raw: str | None) -> int:
    try:
        days = int(raw)
    except (TypeError, ValueError):
        return selectors.UNUSED_AFTER_DAYS
    return min(max(days, 1), 3650)


@admin.register(Grant)
class GrantAdmin(SavedThroughServices, CommandButtons, TenantScopedHistoryAdmin):
    form = GrantForm
    change_form_template = COMMANDS_TEMPLATE
    change_list_template = "admin/tools/grant/change_list.html"
    list_display = ["role_name", "tool", "tenant", "effect_badge", "conditions", "last_used_at", "state"]
    list_filter = [
        "effect",
        ("tenant", admin.RelatedOnlyFieldListFilter),
        GrantStateFilter,
        ("tool__risk_tier", admin.ChoicesFieldListFilter),
    ]
    list_select_related = ["role", "tool", "tenant"]
    search_fields = ["role__name", "tool__name", "note"]
    actions = ["revoke_selected"]
    readonly_fields = ["last_used_at", "created_by", "created_at", "revoked_at", "revoked_by", "revoke_reason"]
    fieldsets = [
        (None, {"fields": ["role", "tool", "effect"]}),
        (
            "Conditions (all must hold)",
            {"fields": ["max_amount", "requires_verified_subject", "allowed_channels", "daily_limit_per_user"]},
        ),
        ("Approving", {"fields": ["may_approve"]}),
        ("Why", {"fields": ["note", "reason"]}),
        (
            "Record",
            {"fields": ["created_by", "created_at", "last_used_at", "revoked_at", "revoked_by", "revoke_reason"]},
        ),
    ]

    commands = {
        "revoke": Command(
            verb="Revoke",
            done="Revoked",
            explanation="The role's holders' agents lose this tool from their next call. The grant stays on record, "
            "revoked, with who, when and why.",
            permission="tools.change_grant",
            run=lambda grant, by, reason: services.revoke_grant(grant=grant, by=by, reason=reason),
            applies=lambda grant: grant.is_active,
        ),
    }

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            # A new grant's note says why it exists; it has no record yet.
            return [(None, self.fieldsets[0][1]), *self.fieldsets[1:3], ("Why", {"fields": ["note"]})]
        if not self.has_change_permission(request, obj):
            return [
                (title, {**options, "fields": [f for f in options["fields"] if f != "reason"]})
                for title, options in self.fieldsets
            ]
        return self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        # The role and tool are what the grant is; the note is why it was made. Change the
        # conditions, or revoke and grant anew.
        return [*self.readonly_fields, "role", "tool", "note"] if obj else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        if obj is not None and not obj.is_active:
            return False  # revoked grants are the record of a decision: read-only
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        tenants = self.tenants_for(request, "add")
        if db_field.name == "role":
            kwargs["queryset"] = db_field.related_model.objects.filter(tenant__in=tenants).select_related("tenant")
        elif db_field.name == "tool":
            kwargs["queryset"] = Tool.objects.filter(tenant__in=tenants).select_related("tenant").order_by("name")
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "tool":
            field.label_from_instance = lambda tool: f"{tool.name} ({tool.tenant.name}, {tool.get_risk_tier_display()})"
        return field

    @admin.display(description="Role", ordering="role__name")
    def role_name(self, grant):
        return grant.role.name

    @admin.display(description="Effect", ordering="effect")
    def effect_badge(self, grant):
        return _badge(EFFECT_COLOURS[grant.effect], grant.get_effect_display())

    @admin.display(description="Conditions")
    def conditions(self, grant):
        return conditions_summary(grant)

    @admin.display(description="State", ordering="revoked_at")
    def state(self, grant):
        return _badge(GREEN, "Active") if grant.is_active else _badge(GREY, f"Revoked {_when(grant.revoked_at)}")

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        conditions = {name: data[name] for name in services.GRANT_CONDITIONS if name in data}
        if change:
            conditions = {name: value for name, value in conditions.items() if name in form.changed_data}
            if not conditions:
                return
            saved = self.call(
                services.update_grant, grant=obj, by=request.user, reason=data.get("reason") or "", **conditions
            )
        else:
            saved = self.call(
                services.create_grant,
                by=request.user,
                role=data["role"],
                tool=data["tool"],
                note=data.get("note") or "",
                **conditions,
            )
        obj.pk = saved.pk
        obj.refresh_from_db()

    @admin.action(description="Revoke selected grants (their roles lose the tool)", permissions=["change"])
    def revoke_selected(self, request, queryset):
        return self.bulk_command(request, queryset.select_related("tenant", "role", "tool"), "revoke")

    # --- Permissions granted vs used ----------------------------------------------------------

    def get_urls(self):
        report = [path("usage/", self.admin_site.admin_view(self.usage_view), name="tools_grant_usage")]
        return report + super().get_urls()

    def usage_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        days = _report_days(request.GET.get("days"))
        report = selectors.grant_usage_report(request.user, days=days)
        return TemplateResponse(
            request,
            "admin/tools/grant/usage.html",
            {
                **self.admin_site.each_context(request),
                "title": "Permissions granted vs used",
                "report": report,
                "days": days,
                "revoke_reason": f"Unused for {days} days",
                "here": request.get_full_path(),
                "opts": self.opts,
            },
        )


# --- The record of tool calls -----------------------------------------------------------------


def _pretty_json(value):
    if value in (None, {}, []):
        return "—"
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))


@admin.register(ToolCall)
class ToolCallAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    """Every call through the gateway, read-only. The arguments kept while a call waits for
    approval (pending_arguments) are in no column and on no page."""

    list_display = ["created_at", "tool_name", "agent", "user", "outcome_badge", "reason_code", "latency"]
    list_filter = [
        "outcome",
        ("tool", admin.RelatedOnlyFieldListFilter),
        ("agent", admin.RelatedOnlyFieldListFilter),
        ("tenant", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["agent", "user"]
    date_hierarchy = "created_at"
    search_fields = ["tool_name", "reason_code", "conversation_id"]
    show_full_result_count = False  # one count per page on a table that only grows
    fieldsets = [
        (None, {"fields": ["created_at", "finished_at", "tenant", "agent", "user", "tool", "tool_name"]}),
        (
            "Decision",
            {"fields": ["outcome", "effect", "reason_code", "reason", "rollout_mode", "grants", "approval_request_id"]},
        ),
        ("Turn", {"fields": ["channel", "conversation_id", "turn_id", "subject", "subject_verified", "scope"]}),
        ("Arguments and result (redacted)", {"fields": ["redacted_arguments", "redacted_result", "error", "latency"]}),
        ("Record", {"fields": ["idempotency_key", "action_digest"]}),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Outcome", ordering="outcome")
    def outcome_badge(self, call):
        return _badge(OUTCOME_COLOURS.get(call.outcome, GREY), call.get_outcome_display())

    @admin.display(description="Latency", ordering="latency_ms")
    def latency(self, call):
        return "—" if call.latency_ms is None else f"{call.latency_ms:.0f} ms"

    @admin.display(description="Arguments")
    def redacted_arguments(self, call):
        return _pretty_json(call.arguments)

    @admin.display(description="Result")
    def redacted_result(self, call):
        return _pretty_json(call.result)

    @admin.display(description="Grants that applied")
    def grants(self, call):
        if not call.grant_ids:
            return "—"
        return format_html_join(
            ", ",
            '<a href="{}">grant {}</a>',
            ((reverse("admin:tools_grant_change", args=[pk]), pk) for pk in call.grant_ids),
        )


# --- Allowlists across agents -----------------------------------------------------------------


@admin.register(AgentTool)
class AgentToolAdmin(TenantScopedHistoryAdmin):
    """Every agent's allowlist in one list. Tools are added from the tool's page; here they
    can be taken off, with a reason."""

    tenant_path = "agent__tenant"
    list_display = ["agent", "tool", "tool_risk", "added_by", "added_at"]
    list_filter = [
        ("agent__tenant", admin.RelatedOnlyFieldListFilter),
        ("agent", admin.RelatedOnlyFieldListFilter),
        ("tool__risk_tier", admin.ChoicesFieldListFilter),
    ]
    list_select_related = ["agent", "tool", "added_by"]
    search_fields = ["agent__name", "tool__name"]
    readonly_fields = ["agent", "tool", "added_by", "added_at"]
    actions = ["disallow_selected"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # taken off with a reason, below

    def has_disallow_permission(self, request):
        return request.user.has_perm("tools.delete_agenttool")

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="Risk", ordering="tool__risk_tier")
    def tool_risk(self, allowance):
        return _badge(TIER_COLOURS[allowance.tool.risk_tier], allowance.tool.get_risk_tier_display())

    @admin.action(description="Take selected tools off their agents' allowlists", permissions=["disallow"])
    def disallow_selected(self, request, queryset):
        rows = list(queryset.select_related("agent__tenant", "tool"))

        def apply(reason: str) -> None:
            apply_to_each(
                request,
                rows,
                lambda allowance: services.disallow_tool(allowance=allowance, by=request.user, reason=reason),
                name=lambda allowance: f"{allowance.tool.name} from {allowance.agent.name}",
                done="Taken off the allowlist",
            )

        return with_reason(
            request,
            self,
            template=REASON_TEMPLATE,
            apply=apply,
            context={
                "title": "Take tools off agents' allowlists",
                "verb": "Take off the allowlist",
                "explanation": "Each agent stops being able to call the tool from its next turn.",
                "items": [
                    {"pk": row.pk, "label": f"{row.tool.name} on {row.agent.name}", "detail": row.agent.tenant.name}
                    for row in rows
                ],
                "cancel_url": ".",
            },
        )
