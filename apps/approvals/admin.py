"""Approval requests in the admin: the record, read-only. Decisions are made on the queue
page (/approvals/) or through the API, where the approval rules are enforced."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from apps.accounts.admin_scoping import RecordOnlyAdminMixin, TenantScopedAdminMixin

from .models import ApprovalDecision, ApprovalRequest


class ApprovalDecisionInline(RecordOnlyAdminMixin, admin.TabularInline):
    model = ApprovalDecision
    fields = ["created_at", "approver", "approve", "comment", "approver_roles"]
    readonly_fields = fields
    extra = 0


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(RecordOnlyAdminMixin, TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "tool_name", "risk_tier", "amount", "subject", "agent", "status", "due_at", "page"]
    list_filter = ["status", "risk_tier", "tool_name", ("agent", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["agent"]
    search_fields = ["tool_name", "subject", "requested_by__username", "turn_id", "conversation_id"]
    date_hierarchy = "created_at"
    inlines = [ApprovalDecisionInline]
    show_full_result_count = False
    exclude = ["action_digest"]

    @admin.display(description="Decide")
    def page(self, approval):
        return format_html('<a href="{}">open</a>', reverse("approvals:detail", args=[approval.pk]))
