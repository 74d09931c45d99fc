from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from .models import AuditEvent
from .selectors import visible_events


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only. Search, stories, reports and exports live on
    the /audit/ pages; this is the plain list for people who work in the admin."""

    list_display = ("seq", "occurred_at", "event_type", "tenant_id", "actor_name", "agent_id", "tool", "decision")
    list_filter = ("event_type",)
    search_fields = ("=turn_id", "=actor_name", "=tool")
    show_full_result_count = False  # no COUNT(*) over millions of rows on every page
    readonly_fields = ("seq", "occurred_at", "event_type", "prev_hash", "row_hash", "body", "story")
    fields = readonly_fields

    def get_queryset(self, request):
        return visible_events(request.user)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="On the audit pages")
    def story(self, event):
        url = reverse("audit:event", args=[event.seq])
        return format_html('<a href="{}">Event #{}</a>', url, event.seq)
