"""Conversations and turns in the admin: read-only records, each turn with its trace."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from apps.accounts.admin_scoping import RecordOnlyAdminMixin, TenantScopedAdminMixin

from .choices import TurnStatus
from .models import Conversation, Step, Turn


class TurnInline(RecordOnlyAdminMixin, admin.TabularInline):
    model = Turn
    fields = ["number", "status", "decision", "input", "output", "model", "cost", "latency_ms"]
    readonly_fields = fields
    show_change_link = True
    extra = 0


@admin.register(Conversation)
class ConversationAdmin(RecordOnlyAdminMixin, TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "agent", "actor", "channel", "subject", "subject_verified", "status"]
    list_filter = ["status", "channel", ("agent", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["agent", "actor"]
    search_fields = ["subject", "actor__username", "id"]
    date_hierarchy = "created_at"
    inlines = [TurnInline]
    show_full_result_count = False


class StepInline(RecordOnlyAdminMixin, admin.TabularInline):
    model = Step
    fields = ["number", "kind", "summary", "detail", "latency_ms", "input_tokens", "output_tokens", "cost"]
    readonly_fields = fields
    extra = 0


@admin.register(Turn)
class TurnAdmin(RecordOnlyAdminMixin, TenantScopedAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "agent", "actor", "status_badge", "decision", "decision_reason", "model", "cost"]
    list_filter = ["status", "decision", "offline", ("agent", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["agent", "actor"]
    search_fields = ["id", "conversation__id", "conversation__subject", "decision_reason"]
    date_hierarchy = "created_at"
    inlines = [StepInline]
    show_full_result_count = False
    exclude = ["state"]  # a paused turn's messages: in the trace, not here
    readonly_fields = ["incident"]

    @admin.display(description="Incident")
    def incident(self, turn):
        """One action from a real turn to a regression case (the evals page checks who may)."""
        if turn.conversation.evaluation:
            return "An evaluation turn: its case is its test."
        return format_html(
            '<a href="{}">Make an eval case from this turn</a>', reverse("evals:case_from_turn", args=[turn.pk])
        )

    @admin.display(description="Status", ordering="status")
    def status_badge(self, turn):
        colours = {TurnStatus.COMPLETED: "#17794a", TurnStatus.FAILED: "#b42318", TurnStatus.REFUSED: "#b42318"}
        return format_html(
            '<strong style="color:{}">{}</strong>', colours.get(turn.status, "#8a5a00"), turn.get_status_display()
        )
