"""Suites and cases (configuration, with history), rollout gates (with history), and read-only
records of runs and reviews. Writes go through ``services``, which re-check the person's role
in the tenant; runs, results and reviews are written by the system and people's pages only.
The /evals/ pages are where people run suites, compare runs and promote agents."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html

from apps.accounts.admin_actions import service_error_text
from apps.accounts.admin_scoping import RecordOnlyAdminMixin, TenantScopedAdminMixin, TenantScopedHistoryAdmin
from apps.agents.models import Agent

from . import services
from .choices import RunTrigger
from .models import EvalCase, EvalResult, EvalRun, EvalSuite, RolloutGate, TurnReview


def _page_link(url: str, text: str):
    return format_html('<a href="{}">{}</a>', url, text)


@admin.register(EvalSuite)
class EvalSuiteAdmin(TenantScopedHistoryAdmin):
    list_display = ["name", "tenant", "agent", "run_as", "active_cases", "run_weekly", "is_active", "page"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter), "run_weekly", "is_active"]
    list_select_related = ["tenant", "agent", "run_as"]
    search_fields = ["name", "description"]
    fields = ["tenant", "name", "description", "agent", "run_as", "run_weekly", "is_active"]
    actions = ["run_selected"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(active_count=Count("cases", filter=Q(cases__is_active=True)))

    def get_readonly_fields(self, request, obj=None):
        return ["tenant"] if obj else []

    @admin.display(description="Active cases", ordering="active_count")
    def active_cases(self, suite):
        return suite.active_count

    @admin.display(description="Runs and results")
    def page(self, suite):
        return _page_link(reverse("evals:suite", args=[suite.pk]), "Open")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "agent":
            kwargs["queryset"] = Agent.objects.filter(tenant__in=self.tenants_for(request, "change"))
        elif db_field.name == "run_as":
            kwargs["queryset"] = self.people_for(request, "change").order_by("username")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in services.SUITE_FIELDS if name in form.cleaned_data}
        if change:
            suite = services.update_suite(suite=obj, by=request.user, **fields)
        else:
            suite = services.create_suite(by=request.user, tenant=form.cleaned_data["tenant"], **fields)
        obj.pk = suite.pk
        obj.refresh_from_db()

    @admin.action(description="Run selected suites (for their own agent)")
    def run_selected(self, request, queryset):
        for suite in queryset.select_related("agent"):
            if suite.agent is None:
                self.message_user(
                    request, f"{suite}: a shared suite; run it for an agent on /evals/.", messages.WARNING
                )
                continue
            try:
                run = services.start_run(suite=suite, agent=suite.agent, by=request.user, trigger=RunTrigger.PAGE)
            except (ValidationError, PermissionDenied) as error:
                self.message_user(request, f"{suite}: {service_error_text(error)}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    format_html(
                        "{}: {}", suite, _page_link(reverse("evals:run", args=[run.pk]), f"run #{run.pk} queued")
                    ),
                )


class EvalCaseForm(forms.ModelForm):
    class Meta:
        model = EvalCase
        fields = ["suite", *services.CASE_FIELDS]
        help_texts = {"must_cite": "Knowledge source ids, e.g. [12, 14]. The ids are on each source's admin page."}


@admin.register(EvalCase)
class EvalCaseAdmin(TenantScopedHistoryAdmin):
    form = EvalCaseForm
    tenant_path = "suite__tenant"
    list_display = ["name", "suite", "category", "expected_decision", "is_active", "from_incident"]
    list_filter = ["category", "is_active", ("suite", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["suite"]
    search_fields = ["name", "input"]
    readonly_fields = ["source_turn", "created_by", "created_at"]
    fieldsets = [
        (None, {"fields": ["suite", "name", "category", "is_active"]}),
        ("The turn", {"fields": ["input", "channel", "subject", "simulated_tool_results"]}),
        (
            "What must happen",
            {
                "description": "At least one expectation. Tools never execute in a run: 'execute' means the gateway "
                "decided it would run the tool without a person.",
                "fields": ["expected_decision", *services.LIST_EXPECTATIONS],
            },
        ),
        ("Record", {"fields": ["source_turn", "created_by", "created_at"]}),
    ]

    @admin.display(description="From an incident", boolean=True)
    def from_incident(self, case):
        return case.source_turn_id is not None

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "suite":
            kwargs["queryset"] = EvalSuite.objects.filter(tenant__in=self.tenants_for(request, "change"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in services.CASE_FIELDS if name in form.cleaned_data}
        if change:
            case = services.update_case(case=obj, by=request.user, **fields)
        else:
            case = services.create_case(by=request.user, suite=form.cleaned_data["suite"], **fields)
        obj.pk = case.pk
        obj.refresh_from_db()


class EvalResultInline(admin.TabularInline):
    model = EvalResult
    extra = 0
    can_delete = False
    fields = ["case_name", "category", "status", "decision", "decision_reason", "failures"]
    readonly_fields = fields
    ordering = ["category", "case_name"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(EvalRun)
class EvalRunAdmin(RecordOnlyAdminMixin, TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = ["id", "created_at", "suite", "agent", "status", "pass_rate", "prompt_version", "model", "page"]
    list_filter = ["status", "trigger", ("agent", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["suite", "agent"]
    date_hierarchy = "created_at"
    inlines = [EvalResultInline]

    @admin.display(description="Results")
    def page(self, run):
        return _page_link(reverse("evals:run", args=[run.pk]), "Open")


class RolloutGateForm(forms.ModelForm):
    reason = forms.CharField(max_length=300, help_text="Why the gate changes: kept with its history and audited.")

    class Meta:
        model = RolloutGate
        fields = ["agent", "target_mode", *services.GATE_FIELDS]


@admin.register(RolloutGate)
class RolloutGateAdmin(TenantScopedHistoryAdmin):
    form = RolloutGateForm
    tenant_path = "agent__tenant"
    list_display = ["agent", "target_mode", "metric", "threshold", "min_reviews", "min_pass_rate", "updated_at"]
    list_filter = ["target_mode", ("agent", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["agent"]

    def get_readonly_fields(self, request, obj=None):
        return ["agent", "target_mode"] if obj else []

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "agent":
            kwargs["queryset"] = Agent.objects.filter(tenant__in=self.tenants_for(request, "change"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        agent = obj.agent if change else form.cleaned_data["agent"]
        gate = services.set_gate(
            by=request.user,
            agent=agent,
            target_mode=obj.target_mode,
            reason=form.cleaned_data["reason"],
            **{name: form.cleaned_data[name] for name in services.GATE_FIELDS},
        )
        obj.pk = gate.pk


@admin.register(TurnReview)
class TurnReviewAdmin(RecordOnlyAdminMixin, TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = ["reviewed_at", "agent", "kind", "agent_action", "human_action", "verdict", "reviewed_by"]
    list_filter = ["kind", ("agent", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["agent", "reviewed_by"]
    date_hierarchy = "reviewed_at"

    @admin.display(description="Verdict")
    def verdict(self, review):
        return services.review_outcome(review)
