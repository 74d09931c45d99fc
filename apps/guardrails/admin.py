from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils.html import format_html

from apps.accounts.admin_scoping import TenantScopedAdminMixin, TenantScopedHistoryAdmin
from apps.agents.models import Agent

from . import services
from .models import GuardrailPolicy, Lockout
from .policy import PolicyError, compile_layers, default_document, validate


def _errors(error: Exception) -> str:
    return "; ".join(error.messages) if isinstance(error, ValidationError) else str(error)


class GuardrailPolicyForm(forms.ModelForm):
    document = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 32, "cols": 100, "spellcheck": "false", "class": "policy-document"}),
        help_text="YAML (docs/guardrails.md). A tenant or agent policy may hold only the keys it changes; "
        "saving checks the whole document and names the line of any problem.",
    )

    class Meta:
        model = GuardrailPolicy
        fields = ["tenant", "agent", "document", "change_note"]

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_document(self):
        document = self.cleaned_data["document"]
        try:
            validate(document)
            compile_layers((("candidate", document),))
        except PolicyError as error:
            raise ValidationError(str(error)) from None
        return document

    def clean(self):
        cleaned = super().clean()
        tenant, agent = cleaned.get("tenant"), cleaned.get("agent")
        if agent is not None and tenant is not None and agent.tenant_id != tenant.pk:
            self.add_error("agent", "Pick an agent of the policy's tenant.")
        if tenant is None and agent is None and self.user is not None and not self.user.is_superuser:
            self.add_error("tenant", "Pick a tenant: the global policy is a platform administrator's to change.")
        return cleaned


@admin.register(GuardrailPolicy)
class GuardrailPolicyAdmin(TenantScopedHistoryAdmin):
    """Versions are immutable: "add" saves a new version (pre-filled with the one in force),
    "Activate" makes one the scope's active version — also an earlier one, to roll back. A
    version's page shows its diff from the active version of its scope."""

    form = GuardrailPolicyForm
    list_display = ("scope_label", "version", "is_active", "change_note", "created_by", "created_at", "activated_at")
    list_filter = ("is_active", "tenant")
    list_select_related = ("tenant", "agent", "created_by")
    ordering = ("scope", "-version")
    actions = ["activate_selected"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)

        class WithUser(form):
            def __init__(self, *args, **inner):
                super().__init__(*args, user=request.user, **inner)

        return WithUser

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        active = GuardrailPolicy.objects.filter(scope="global", is_active=True).values_list("document", flat=True)
        initial.setdefault("document", active.first() or default_document())
        return initial

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "agent":
            kwargs["queryset"] = Agent.objects.for_user(request.user, "view").select_related("tenant")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("tenant", "agent", "version", "document_text", "change_note", "state", "diff_from_active")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("tenant", "agent", "document", "change_note")
        return ("tenant", "agent", "version", "state", "change_note", "diff_from_active", "document_text")

    @admin.display(description="Document")
    def document_text(self, policy):
        return format_html('<pre class="policy-document">{}</pre>', policy.document)

    @admin.display(description="State")
    def state(self, policy):
        if policy.is_active:
            return f"Active since {policy.activated_at:%Y-%m-%d %H:%M} (by {policy.activated_by})"
        return "Not active. Use the action “Activate selected version” on the list to make it active."

    @admin.display(description="Diff from the active version of its scope")
    def diff_from_active(self, policy):
        active = GuardrailPolicy.objects.filter(scope=policy.scope, is_active=True).first()
        if active is None or active.pk == policy.pk:
            return "—" if active else "No version of this scope is active (the layers below it apply)."
        diff = services.diff_documents(
            active.document, policy.document, f"v{active.version} (active)", f"v{policy.version}"
        )
        return format_html('<pre class="policy-diff">{}</pre>', diff or "(identical)")

    def has_change_permission(self, request, obj=None):
        # Versions are immutable; the change page is read-only. Activation has its action.
        return False if obj is not None else super().has_change_permission(request, obj)

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) or super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        policy = services.save_policy(
            document=form.cleaned_data["document"],
            by=request.user,
            tenant=form.cleaned_data.get("tenant"),
            agent=form.cleaned_data.get("agent"),
            change_note=form.cleaned_data.get("change_note") or "",
        )
        obj.pk = policy.pk
        obj.refresh_from_db()
        messages.info(request, f"Saved as {policy}. It takes effect once activated.")

    @admin.action(description="Activate selected version (one)")
    def activate_selected(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        policy = queryset.get()
        try:
            services.activate_policy(policy=policy, by=request.user, reason=f"activated in the admin by {request.user}")
        except (ValidationError, PermissionDenied) as error:
            self.message_user(request, f"{policy}: {_errors(error) or 'not allowed'}", messages.ERROR)
            return
        self.message_user(request, f"{policy.scope_label} v{policy.version} is now active.", messages.SUCCESS)


@admin.register(Lockout)
class LockoutAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = ("tenant", "user", "subject", "reason", "created_at", "expires_at", "in_force_now", "lifted_by")
    list_filter = ("tenant",)
    list_select_related = ("tenant", "user", "lifted_by")
    search_fields = ("subject", "user__username")
    actions = ["lift_selected"]
    readonly_fields = (
        "tenant",
        "user",
        "subject",
        "reason",
        "created_at",
        "expires_at",
        "lifted_at",
        "lifted_by",
        "lift_reason",
    )

    @admin.display(boolean=True, description="In force")
    def in_force_now(self, lockout):
        return lockout.in_force

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False if obj is not None else super().has_change_permission(request, obj)

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) or super().has_change_permission(request, obj)

    @admin.action(description="Lift selected lockouts now")
    def lift_selected(self, request, queryset):
        reason = f"lifted in the admin by {request.user}"
        lifted, failed = [], []
        for lockout in queryset.select_related("tenant", "user"):
            try:
                services.lift_lockout(lockout=lockout, by=request.user, reason=reason)
                lifted.append(str(lockout.user or lockout.subject))
            except (ValidationError, PermissionDenied) as error:
                failed.append(f"{lockout.user or lockout.subject}: {_errors(error) or 'not allowed'}")
        if lifted:
            self.message_user(request, f"Lifted: {', '.join(lifted)}.", messages.SUCCESS)
        for failure in failed:
            self.message_user(request, failure, messages.ERROR)
