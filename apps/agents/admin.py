import copy

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils.html import format_html

from apps.accounts.admin_actions import apply_to_each, service_error_text, with_reason
from apps.accounts.admin_scoping import TenantScopedHistoryAdmin
from apps.accounts.permissions import has_tenant_permission

from . import services
from .choices import AgentStatus, Channel, RolloutMode
from .models import Agent, KillSwitch, ModelProvider, PromptVersion


class AgentForm(forms.ModelForm):
    channels = forms.MultipleChoiceField(choices=Channel.choices, required=False, widget=forms.CheckboxSelectMultiple)
    connected_systems = forms.CharField(
        required=False,
        help_text="One per line, e.g. Zendesk, Shopify, Salesforce.",
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    system_prompt = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 10, "class": "vLargeTextField"}),
        help_text="Saving a changed prompt publishes a new immutable version; earlier versions stay on record.",
    )
    prompt_change_note = forms.CharField(
        required=False, max_length=300, help_text="What changed in the prompt, and why."
    )

    class Meta:
        model = Agent
        fields = ["tenant", *services.EDITABLE_AGENT_FIELDS]
        error_messages = {
            "owner": {"required": "Every agent needs an owner: the person accountable for what it does."},
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["connected_systems"] = "\n".join(self.instance.connected_systems)
            if self.instance.current_prompt_id:
                self.initial["system_prompt"] = self.instance.current_prompt.text

    def clean(self):
        """A move to a more autonomous mode must have passed its rollout gates, on the model
        this same save leaves the agent with (services.update_agent checks it again)."""
        cleaned = super().clean()
        new_mode = cleaned.get("rollout_mode")
        old_mode = self.instance.rollout_mode if self.instance.pk else RolloutMode.SHADOW
        if not new_mode or not services.is_promotion(old_mode, new_mode):
            return cleaned
        if not self.instance.pk:
            self.add_error("rollout_mode", "A new agent starts in shadow mode; promote it once it passes the gates.")
            return cleaned
        prompt = (cleaned.get("system_prompt") or "").strip()
        current = self.instance.current_prompt.text.strip() if self.instance.current_prompt_id else ""
        if prompt and prompt != current:
            self.add_error("rollout_mode", "Publish the new prompt and evaluate it before promoting the agent.")
            return cleaned
        candidate = copy.copy(self.instance)
        for name in ("model_provider", "model_name", "routine_model_name"):
            if name in cleaned:
                setattr(candidate, name, cleaned[name])
        shortfalls = services.promotion_shortfalls(candidate, old_mode, new_mode)
        if shortfalls:
            self.add_error("rollout_mode", [f"Not earned yet: {old_mode} to {new_mode}.", *shortfalls])
        return cleaned

    def clean_connected_systems(self):
        raw = self.cleaned_data.get("connected_systems") or ""
        systems = [line.strip() for line in raw.replace(",", "\n").splitlines() if line.strip()]
        return list(dict.fromkeys(systems))


@admin.register(ModelProvider)
class ModelProviderAdmin(TenantScopedHistoryAdmin):
    list_display = ["name", "tenant", "base_url", "models", "is_active"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter), "is_active"]
    list_select_related = ["tenant"]
    search_fields = ["name", "base_url"]

    @admin.display(description="Models")
    def models(self, provider):
        return ", ".join(provider.model_names)


class PromptVersionInline(admin.TabularInline):
    model = PromptVersion
    extra = 0
    can_delete = False
    fields = ["number", "change_note", "author", "approved_by", "approved_at", "created_at"]
    readonly_fields = fields
    show_change_link = True
    ordering = ["-number"]

    def has_add_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("author", "approved_by")


@admin.register(Agent)
class AgentAdmin(TenantScopedHistoryAdmin):
    form = AgentForm
    list_display = ["name", "tenant", "owner", "status_badge", "rollout_mode", "environment", "prompt", "updated_at"]
    # Related-only filters list just the tenants and owners among visible rows, never
    # another tenant's names.
    list_filter = [
        ("tenant", admin.RelatedOnlyFieldListFilter),
        ("owner", admin.RelatedOnlyFieldListFilter),
        "status",
        "rollout_mode",
        "environment",
    ]
    list_select_related = ["tenant", "owner", "current_prompt"]
    search_fields = ["name", "slug", "purpose", "owner__username", "owner__display_name", "business_owner"]
    inlines = [PromptVersionInline]
    actions = ["suspend_selected", "resume_selected"]
    readonly_fields = [
        "status",
        "status_reason",
        "status_changed_at",
        "status_changed_by",
        "current_prompt",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "slug", "purpose"]}),
        ("Accountability", {"fields": ["owner", "business_owner"]}),
        ("Where it runs", {"fields": ["environment", "channels", "connected_systems"]}),
        ("Autonomy", {"fields": ["status", "status_reason", "status_changed_at", "status_changed_by", "rollout_mode"]}),
        (
            "Model",
            {
                "fields": [
                    "model_provider",
                    "model_name",
                    "routine_model_name",
                    "current_prompt",
                    "system_prompt",
                    "prompt_change_note",
                ]
            },
        ),
        (
            "Turn rules",
            {
                "description": "Limits on each turn, and the business rules that hand a conversation to a person.",
                "fields": list(services.TURN_RULE_FIELDS),
            },
        ),
        ("Record", {"fields": ["created_at", "updated_at"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        # An agent never moves between tenants: its history and audit trail are the tenant's.
        return [*self.readonly_fields, "tenant"] if obj else self.readonly_fields

    @admin.display(description="Status", ordering="status")
    def status_badge(self, agent):
        colours = {AgentStatus.ACTIVE: "#17794a", AgentStatus.SUSPENDED: "#b42318", AgentStatus.RETIRED: "#6b7482"}
        return format_html('<strong style="color:{}">{}</strong>', colours[agent.status], agent.get_status_display())

    @admin.display(description="Prompt")
    def prompt(self, agent):
        return f"v{agent.current_prompt.number}" if agent.current_prompt_id else "—"

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "model_provider":
            kwargs["queryset"] = ModelProvider.objects.filter(tenant__in=self.tenants_for(request, "change"))
        elif db_field.name == "owner":
            # Owners must hold a role in the agent's tenant (checked on save); offer the
            # people of the tenants this user manages agents in.
            kwargs["queryset"] = self.people_for(request, "change").order_by("username")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        """Writes go through the services, which re-check the user's role in the tenant."""
        fields = {name: form.cleaned_data[name] for name in services.EDITABLE_AGENT_FIELDS if name in form.cleaned_data}
        prompt_text = form.cleaned_data.get("system_prompt") or ""
        note = form.cleaned_data.get("prompt_change_note") or ""
        with transaction.atomic():
            if change:
                agent = services.update_agent(agent=obj, by=request.user, **fields)
                if prompt_text.strip():
                    services.publish_prompt(agent=agent, text=prompt_text, author=request.user, change_note=note)
            else:
                agent = services.create_agent(
                    by=request.user, tenant=form.cleaned_data["tenant"], prompt_text=prompt_text, **fields
                )
        obj.pk = agent.pk
        obj.refresh_from_db()

    def _status_action(self, request, queryset, operation, verb: str):
        def apply(reason: str) -> None:
            apply_to_each(
                request,
                queryset,
                lambda agent: operation(agent=agent, by=request.user, reason=reason),
                name=lambda agent: agent.name,
                done=f"{verb.capitalize()}ed",
            )

        return with_reason(
            request,
            self,
            template="admin/agents/agent/status_reason.html",
            apply=apply,
            context={"title": f"{verb.capitalize()} agents", "verb": verb, "agents": queryset},
        )

    @admin.action(description="Suspend selected agents (kill switch for these agents only)")
    def suspend_selected(self, request, queryset):
        return self._status_action(request, queryset, services.suspend_agent, "suspend")

    @admin.action(description="Resume selected agents")
    def resume_selected(self, request, queryset):
        return self._status_action(request, queryset, services.resume_agent, "resume")

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not request.user.has_perm("agents.suspend_agent"):
            actions.pop("suspend_selected", None)
            actions.pop("resume_selected", None)
        return actions


@admin.register(PromptVersion)
class PromptVersionAdmin(TenantScopedHistoryAdmin):
    tenant_path = "agent__tenant"
    list_display = ["agent", "number", "author", "approved_by", "created_at", "change_note"]
    list_filter = [("agent__tenant", admin.RelatedOnlyFieldListFilter), ("approved_by", admin.EmptyFieldListFilter)]
    list_select_related = ["agent", "author", "approved_by"]
    search_fields = ["agent__name", "text", "change_note"]
    readonly_fields = ["agent", "number", "text", "change_note", "author", "approved_by", "approved_at", "created_at"]
    actions = ["approve_selected"]

    def has_add_permission(self, request):
        return False  # published from the agent's page, so the agent always points at its newest

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Approve selected prompt versions")
    def approve_selected(self, request, queryset):
        for version in queryset.select_related("agent"):
            try:
                services.approve_prompt(version=version, approver=request.user)
                messages.success(request, f"Approved {version}.")
            except (ValidationError, PermissionDenied) as error:
                messages.error(request, f"{version}: {service_error_text(error)}")


class KillSwitchForm(forms.ModelForm):
    may_operate_global = False  # set per request by KillSwitchAdmin.get_form

    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), help_text="Required: kept with the switch's history."
    )

    class Meta:
        model = KillSwitch
        fields = ["tenant", "engaged", "reason"]
        help_texts = {"tenant": "Leave empty for the global switch, which stops every agent of every tenant."}

    def clean_tenant(self):
        tenant = self.cleaned_data.get("tenant")
        if tenant is None and self.instance.pk is None and not self.may_operate_global:
            raise ValidationError("Pick your tenant: only a platform administrator may operate the global switch.")
        return tenant


@admin.register(KillSwitch)
class KillSwitchAdmin(TenantScopedHistoryAdmin):
    form = KillSwitchForm
    list_display = ["__str__", "engaged", "reason", "changed_by", "changed_at"]
    list_select_related = ["tenant", "changed_by"]
    readonly_fields = ["changed_by", "changed_at"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "tenant"] if obj else self.readonly_fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.may_operate_global = request.user.is_superuser
        if obj is not None:
            form.base_fields["reason"].initial = ""
        return form

    def get_changeform_initial_data(self, request):
        return {"engaged": True}

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.tenant_id is None:
            return request.user.is_superuser
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        tenant = obj.tenant if obj.tenant_id else None
        if tenant is not None and not has_tenant_permission(request.user, tenant.pk, "agents.change_killswitch"):
            raise PermissionDenied
        switch = services.set_kill_switch(
            engaged=form.cleaned_data["engaged"], by=request.user, reason=form.cleaned_data["reason"], tenant=tenant
        )
        obj.pk = switch.pk
        obj.refresh_from_db()
