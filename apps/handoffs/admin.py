"""Handoff queues (configuration, with history) and a read-only record of handoffs.

People work handoffs on /handoffs/, where claiming, resolving and returning go through the
services; the admin only shows them. Queue changes go through ``services.save_queue``,
which re-checks the person's role in the tenant, keeps history and audits the diff.
"""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html

from apps.accounts.admin_scoping import RecordOnlyAdminMixin, TenantScopedAdminMixin, TenantScopedHistoryAdmin
from apps.accounts.models import Role

from . import services
from .choices import WAITING_STATUSES
from .models import Handoff, HandoffQueue


class HandoffQueueForm(forms.ModelForm):
    class Meta:
        model = HandoffQueue
        fields = [
            "tenant",
            "name",
            "description",
            "sla_minutes",
            "roles",
            "reason_codes",
            "topics",
            "is_default",
            "escalate_to",
            "is_active",
        ]

    def _get_validation_exclusions(self):
        # One default per tenant: making this queue the default takes that from the previous
        # default (services.save_queue), so it is not an error on this form.
        return {*super()._get_validation_exclusions(), "is_default"}

    def clean(self):
        cleaned = super().clean()
        tenant = cleaned.get("tenant") or (self.instance.tenant if self.instance.tenant_id else None)
        if tenant is not None:
            probe = HandoffQueue(tenant=tenant)
            try:
                probe.check_roles(cleaned.get("roles") or [])
            except ValidationError as error:
                self.add_error("roles", error.message_dict["roles"])
        return cleaned


@admin.register(HandoffQueue)
class HandoffQueueAdmin(TenantScopedHistoryAdmin):
    form = HandoffQueueForm
    list_display = ["name", "tenant", "sla_minutes", "is_default", "is_active", "worked_by", "takes", "waiting"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter), "is_active", "is_default"]
    list_select_related = ["tenant", "escalate_to"]
    search_fields = ["name", "description"]
    filter_horizontal = ["roles"]
    readonly_fields = ["created_at"]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "description", "is_active"]}),
        ("Who works it and how fast", {"fields": ["roles", "sla_minutes", "escalate_to"]}),
        (
            "What it takes",
            {
                "description": "A handoff goes to the queue naming its escalation topic, else to one naming its "
                "reason code, else to the tenant's default queue.",
                "fields": ["topics", "reason_codes", "is_default"],
            },
        ),
        ("Record", {"fields": ["created_at"]}),
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .prefetch_related("roles")
            .annotate(waiting_count=Count("handoffs", filter=Q(handoffs__status__in=WAITING_STATUSES)))
        )

    def get_readonly_fields(self, request, obj=None):
        # A queue never moves between tenants: its handoffs and history are the tenant's.
        return [*self.readonly_fields, "tenant"] if obj else self.readonly_fields

    @admin.display(description="Worked by")
    def worked_by(self, queue):
        return ", ".join(role.name for role in queue.roles.all()) or "anyone who works handoffs"

    @admin.display(description="Takes")
    def takes(self, queue):
        parts = [*queue.topics, *queue.reason_codes]
        if queue.is_default:
            parts.append("everything else")
        return ", ".join(parts) or "—"

    @admin.display(description="Waiting", ordering="waiting_count")
    def waiting(self, queue):
        return queue.waiting_count

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "escalate_to":
            kwargs["queryset"] = HandoffQueue.objects.filter(
                tenant__in=self.tenants_for(request, "change")
            ).select_related("tenant")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "roles":
            kwargs["queryset"] = Role.objects.filter(tenant__in=self.tenants_for(request, "change")).select_related(
                "tenant"
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        """Writes go through the service, which re-checks the user's role in the tenant."""
        fields = {name: form.cleaned_data[name] for name in services.QUEUE_FIELDS if name in form.cleaned_data}
        roles = list(form.cleaned_data.get("roles") or [])
        if change:
            queue = services.save_queue(by=request.user, queue=obj, roles=roles, **fields)
        else:
            queue = services.save_queue(by=request.user, tenant=form.cleaned_data["tenant"], roles=roles, **fields)
        obj.pk = queue.pk
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        """The roles were saved by the service (with history and the audit event)."""
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)


@admin.register(Handoff)
class HandoffAdmin(RecordOnlyAdminMixin, TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = ["id", "created_at", "tenant", "reason_code", "subject", "queue", "priority", "status", "due_at"]
    list_filter = ["status", "priority", ("queue", admin.RelatedOnlyFieldListFilter), "reason_code"]
    list_select_related = ["tenant", "queue"]
    search_fields = ["subject", "reason_code", "reason", "conversation_id", "turn_id"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    readonly_fields = ["work_it_here"]

    @admin.display(description="Work it")
    def work_it_here(self, handoff):
        url = reverse("handoffs:detail", args=[handoff.pk])
        return format_html('<a href="{}">Open on the handoff page</a> (claim, resolve, return there)', url)
