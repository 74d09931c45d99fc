"""The knowledge owner's pages: sources with their freshness at a glance, the filters an
owner works from ("mine", "stale", "due in 7 days", "awaiting approval", "in conflict"),
bulk lifecycle actions that ask why, the full history of each source, the conflict hints
and the knowledge gaps. Every write goes through services.py."""

import datetime
import re

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from apps.accounts.admin_actions import ReasonForm, apply_to_each, service_error_text, with_reason
from apps.accounts.admin_scoping import TenantScopedAdminMixin, TenantScopedHistoryAdmin
from apps.accounts.choices import RoleKind
from apps.agents.choices import Channel

from . import services
from .choices import Lifecycle
from .models import ConflictHint, KnowledgeGap, KnowledgeSource, SourceEvent
from .text import html_to_text

UPLOAD_EXTENSIONS = (".txt", ".md", ".markdown", ".html", ".htm")
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
DUE_SOON_DAYS = 7
REASON_TEMPLATE = "admin/knowledge/knowledgesource/lifecycle_reason.html"


class ScopeListField(forms.CharField):
    """Codes typed as "eu, uk" (or one per line), kept as ["eu", "uk"]."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.TextInput(attrs={"size": 60}))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        text = super().to_python(value) or ""
        return [item.strip().lower() for item in re.split(r"[,\n]", text) if item.strip()]


class KnowledgeSourceForm(forms.ModelForm):
    upload = forms.FileField(
        required=False,
        help_text="Or upload a .txt, .md or .html file (UTF-8, up to 2 MB); it replaces the text above.",
    )
    restricted_roles = forms.MultipleChoiceField(
        choices=RoleKind.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="For restricted sources only: the roles whose members' agents may use it.",
    )
    channels = forms.MultipleChoiceField(
        choices=Channel.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked means every channel.",
    )
    brands = ScopeListField(help_text="Brand codes, comma separated. Empty means every brand.")
    regions = ScopeListField(help_text="Region codes, e.g. eu, us, uk. Empty means every region.")
    products = ScopeListField(help_text="Product-line codes. Empty means every product line.")
    segments = ScopeListField(help_text="Customer segments, e.g. consumer, enterprise. Empty means every segment.")
    origin_url = forms.URLField(
        required=False, max_length=500, assume_scheme="https", help_text="Where the original lives, if anywhere."
    )
    reason = forms.CharField(
        required=False, max_length=300, help_text="Why this change (kept in the source's history)."
    )

    class Meta:
        model = KnowledgeSource
        fields = ["tenant", *services.EDITABLE_SOURCE_FIELDS]
        widgets = {"body": forms.Textarea(attrs={"rows": 18, "class": "vLargeTextField"})}
        error_messages = {"owner": {"required": "Every source needs an owner: the person who keeps it true."}}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "body" in self.fields:
            self.fields["body"].required = False  # the upload may supply it; the service insists on text

    def clean_upload(self):
        upload = self.cleaned_data.get("upload")
        if not upload:
            return ""
        name = upload.name.lower()
        if not name.endswith(UPLOAD_EXTENSIONS):
            raise ValidationError(f"Upload a .txt, .md or .html file; “{upload.name}” is none of those.")
        if upload.size > MAX_UPLOAD_BYTES:
            raise ValidationError(f"“{upload.name}” is {upload.size:,} bytes; the limit is {MAX_UPLOAD_BYTES:,}.")
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ValidationError(
                f"“{upload.name}” is not UTF-8 text (byte {error.start}); save it as UTF-8 and upload again."
            ) from error
        if "\x00" in text:
            raise ValidationError(f"“{upload.name}” looks like a binary file, not text.")
        return html_to_text(text) if name.endswith((".html", ".htm")) else text

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("upload"):
            cleaned["body"] = cleaned["upload"]
        return cleaned


class AttentionFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return [
            ("mine", "My sources"),
            ("stale", "Stale (review overdue)"),
            ("due_soon", f"Review due in {DUE_SOON_DAYS} days"),
            ("awaiting_approval", "Draft awaiting approval"),
            ("conflicts", "Open conflict hints"),
        ]

    def queryset(self, request, queryset):
        today = timezone.localdate()
        value = self.value()
        if value == "mine":
            return queryset.filter(owner=request.user)
        if value == "stale":
            return queryset.filter(status=Lifecycle.APPROVED, review_due_on__lt=today)
        if value == "due_soon":
            return queryset.filter(
                status=Lifecycle.APPROVED,
                review_due_on__gte=today,
                review_due_on__lte=today + datetime.timedelta(days=DUE_SOON_DAYS),
            )
        if value == "awaiting_approval":
            return queryset.filter(status=Lifecycle.DRAFT)
        if value == "conflicts":
            open_hints = ConflictHint.objects.open()
            return queryset.filter(
                Q(pk__in=open_hints.values("source_id")) | Q(pk__in=open_hints.values("other_source_id"))
            )
        return queryset


class SourceEventInline(admin.TabularInline):
    model = SourceEvent
    extra = 0
    can_delete = False
    fields = ["at", "action", "from_status", "to_status", "version", "by", "reason"]
    readonly_fields = fields
    verbose_name_plural = "Lifecycle (who, when, why)"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("by")


STATUS_COLOURS = {
    Lifecycle.DRAFT: "#6b7482",
    Lifecycle.APPROVED: "#17794a",
    Lifecycle.DEPRECATED: "#9a6700",
    Lifecycle.DELETED: "#b42318",
}


@admin.register(KnowledgeSource)
class KnowledgeSourceAdmin(TenantScopedHistoryAdmin):
    form = KnowledgeSourceForm
    change_form_template = "admin/knowledge/knowledgesource/change_form.html"
    list_display = [
        "title",
        "tenant",
        "kind",
        "owner",
        "status_badge",
        "freshness",
        "review_due_on",
        "visibility",
        "version",
        "updated_at",
    ]
    list_filter = [
        AttentionFilter,
        "status",
        "visibility",
        "kind",
        "stale_policy",
        ("tenant", admin.RelatedOnlyFieldListFilter),
        ("owner", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["tenant", "owner"]
    search_fields = ["title", "owner__username", "owner__display_name", "origin_url"]
    inlines = [SourceEventInline]
    actions = ["approve_selected", "mark_reviewed_selected", "deprecate_selected", "delete_selected_sources"]
    readonly_fields = [
        "status",
        "version",
        "last_reviewed_on",
        "review_due_on",
        "stale_since",
        "approved_by",
        "approved_at",
        "open_conflicts",
        "passage_count",
        "created_by",
        "created_at",
        "updated_at",
    ]
    tombstone_fields = ["tenant", "title", "kind", "owner", "status", "deleted_by", "deleted_at", "deletion_reason"]
    fieldsets = [
        (None, {"fields": ["tenant", "title", "kind", "owner", "origin_url"]}),
        ("Text", {"fields": ["body", "upload", "version", "passage_count"]}),
        (
            "Who may be told this",
            {"fields": ["visibility", "restricted_roles", "brands", "regions", "products", "segments", "channels"]},
        ),
        (
            "Lifecycle and freshness",
            {
                "fields": [
                    "status",
                    "approved_by",
                    "approved_at",
                    "review_cadence_days",
                    "last_reviewed_on",
                    "review_due_on",
                    "stale_policy",
                    "stale_since",
                    "open_conflicts",
                ]
            },
        ),
        ("Record", {"fields": ["reason", "created_by", "created_at", "updated_at"]}),
    ]

    def get_fieldsets(self, request, obj=None):
        if obj is not None and obj.status == Lifecycle.DELETED:
            return [("Tombstone: the text was purged", {"fields": self.tombstone_fields})]
        return self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.status == Lifecycle.DELETED:
            return self.tombstone_fields
        # A source never moves between tenants: its history and audit trail are the tenant's.
        return [*self.readonly_fields, "tenant"] if obj else self.readonly_fields

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deleting is a purge with a tombstone, below
        return actions

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.status == Lifecycle.DELETED:
            return False
        return super().has_change_permission(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "owner":
            kwargs["queryset"] = self.people_for(request, "change").order_by("username")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    # --- Columns ------------------------------------------------------------------------------

    @admin.display(description="Status", ordering="status")
    def status_badge(self, source):
        return format_html(
            '<strong style="color:{}">{}</strong>', STATUS_COLOURS[source.status], source.get_status_display()
        )

    @admin.display(description="Freshness", ordering="review_due_on")
    def freshness(self, source):
        if source.status != Lifecycle.APPROVED:
            return format_html('<span style="color:#6b7482">{}</span>', "—")
        today = timezone.localdate()
        if source.is_overdue(today):
            effect = "excluded" if source.stale_policy == "exclude" else "used with warning"
            return format_html('<strong style="color:#b42318">Stale ({})</strong>', effect)
        days = (source.review_due_on - today).days
        if days <= DUE_SOON_DAYS:
            label = "due today" if days == 0 else f"due in {days} day{'s' if days != 1 else ''}"
            return format_html('<strong style="color:#9a6700">{}</strong>', label.capitalize())
        return format_html('<span style="color:#17794a">{}</span>', "Fresh")

    @admin.display(description="Passages")
    def passage_count(self, source):
        return source.passages.count() if source.pk else 0

    @admin.display(description="Open conflict hints")
    def open_conflicts(self, source):
        if not source.pk:
            return "—"
        hints = (
            ConflictHint.objects.open()
            .filter(Q(source=source) | Q(other_source=source))
            .select_related("source", "other_source")
        )
        rows = [
            (
                reverse("admin:knowledge_conflicthint_change", args=[hint.pk]),
                hint.other_source.title if hint.source_id == source.pk else hint.source.title,
                hint.detail,
            )
            for hint in hints
        ]
        if not rows:
            return "None"
        return format_html_join("", '<p><a href="{}">With “{}”</a>: {}</p>', rows)

    # --- Saving -------------------------------------------------------------------------------

    def save_model(self, request, obj, form, change):
        """Writes go through the services, which re-check the user's role in the tenant."""
        editable = services.EDITABLE_SOURCE_FIELDS
        fields = {name: form.cleaned_data[name] for name in editable if name in form.cleaned_data}
        reason = form.cleaned_data.get("reason") or ""
        if change:
            was_approved = KnowledgeSource.objects.filter(pk=obj.pk, status=Lifecycle.APPROVED).exists()
            source = services.update_source(source=obj, by=request.user, reason=reason, **fields)
            if was_approved and source.status == Lifecycle.DRAFT:
                messages.warning(
                    request,
                    f"“{source.title}” changed what agents may say or to whom, so it is a draft again: agents "
                    "stop using it until it is approved.",
                )
        else:
            tenant = form.cleaned_data["tenant"]
            source = services.create_source(by=request.user, tenant=tenant, reason=reason, **fields)
        obj.pk = source.pk
        obj.refresh_from_db()

    # --- Lifecycle: buttons on a source's page -----------------------------------------------

    # url name -> (service, verb, needs a reason, explanation)
    LIFECYCLE_STEPS = {
        "approve": (services.approve_source, "Approve", False, "Agents may use it from their next question."),
        "review": (
            services.mark_reviewed,
            "Mark reviewed",
            False,
            "You confirm it is still accurate; the review clock starts again.",
        ),
        "deprecate": (
            services.deprecate_source,
            "Deprecate",
            True,
            "Agents stop using it from their next question. The text is kept for the record.",
        ),
        "purge": (
            services.purge_source,
            "Delete",
            True,
            "The text, passages and the text in earlier history versions are purged now and cannot be "
            "recovered. A tombstone (title, owner, who deleted it, when and why) remains.",
        ),
    }

    def get_urls(self):
        from django.urls import path

        steps = [
            path(
                f"<path:object_id>/{step}/",
                self.admin_site.admin_view(self.lifecycle_view),
                {"step": step},
                name=f"knowledge_knowledgesource_{step}",
            )
            for step in self.LIFECYCLE_STEPS
        ]
        return steps + super().get_urls()

    def lifecycle_view(self, request, object_id, step):
        source = self.get_object(request, object_id)
        if source is None or not self.has_view_permission(request, source):
            raise PermissionDenied
        operation, verb, needs_reason, explanation = self.LIFECYCLE_STEPS[step]
        form = ReasonForm(request.POST or None)
        if not needs_reason:
            form.fields["reason"].required = False
        if request.method == "POST" and form.is_valid():
            note = form.cleaned_data["reason"]
            try:
                if step == "review":
                    operation(source=source, by=request.user, note=note)
                else:
                    operation(source=source, by=request.user, reason=note)
            except (ValidationError, PermissionDenied) as error:
                messages.error(request, service_error_text(error))
            else:
                messages.success(request, f"{verb}: {source.title}.")
            return HttpResponseRedirect(reverse("admin:knowledge_knowledgesource_change", args=[source.pk]))
        return TemplateResponse(
            request,
            REASON_TEMPLATE,
            {
                **self.admin_site.each_context(request),
                "title": f"{verb}: {source.title}",
                "verb": verb,
                "explanation": explanation,
                "sources": [source],
                "form": form,
                "reason_required": needs_reason,
                "single": True,
                "opts": self.model._meta,
            },
        )

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.status != Lifecycle.DELETED:
            available = {
                Lifecycle.DRAFT: ("approve", "deprecate", "purge"),
                Lifecycle.APPROVED: ("review", "deprecate", "purge"),
                Lifecycle.DEPRECATED: ("approve", "purge"),
            }[obj.status]
            context["lifecycle_steps"] = [
                (reverse(f"admin:knowledge_knowledgesource_{step}", args=[obj.pk]), self.LIFECYCLE_STEPS[step][1])
                for step in available
            ]
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- Lifecycle actions --------------------------------------------------------------------

    def _run(self, request, queryset, operation, verb: str, **kwargs):
        apply_to_each(
            request,
            queryset,
            lambda source: operation(source=source, by=request.user, **kwargs),
            name=lambda source: source.title,
            done=verb,
        )

    def _with_reason(self, request, queryset, operation, verb: str, explanation: str):
        return with_reason(
            request,
            self,
            template=REASON_TEMPLATE,
            apply=lambda reason: self._run(request, queryset, operation, verb, reason=reason),
            context={
                "title": f"{verb} knowledge sources",
                "verb": verb,
                "explanation": explanation,
                "sources": queryset.select_related("tenant"),
            },
        )

    @admin.action(description="Approve selected sources (agents may use them)")
    def approve_selected(self, request, queryset):
        self._run(request, queryset, services.approve_source, "Approved")

    @admin.action(description="Mark selected sources reviewed (still accurate)")
    def mark_reviewed_selected(self, request, queryset):
        self._run(request, queryset, services.mark_reviewed, "Marked reviewed")

    @admin.action(description="Deprecate selected sources (agents stop using them)")
    def deprecate_selected(self, request, queryset):
        return self._with_reason(
            request,
            queryset,
            services.deprecate_source,
            "Deprecate",
            "Agents stop using these sources from their next question. The text is kept for the record.",
        )

    @admin.action(description="Delete selected sources (purge their text)")
    def delete_selected_sources(self, request, queryset):
        return self._with_reason(
            request,
            queryset,
            services.purge_source,
            "Delete",
            "The text, passages and the text in earlier history versions are purged now and cannot be "
            "recovered. A tombstone (title, owner, who deleted it, when and why) remains.",
        )


class ConflictHintForm(forms.ModelForm):
    resolution = forms.CharField(max_length=300, help_text="How it was settled, e.g. which source is right.")

    class Meta:
        model = ConflictHint
        fields = ["resolution"]


@admin.register(ConflictHint)
class ConflictHintAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    form = ConflictHintForm
    list_display = ["source", "other_source", "kind", "detail", "found_at", "resolved_at", "resolved_by"]
    list_filter = [("resolved_at", admin.EmptyFieldListFilter), "kind", ("tenant", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["source", "other_source", "resolved_by", "tenant"]
    readonly_fields = ["tenant", "source", "other_source", "kind", "detail", "found_at", "resolved_at", "resolved_by"]
    fields = [*readonly_fields, "resolution"]
    actions = ["resolve_selected"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_model(self, request, obj, form, change):
        services.resolve_conflict(hint=obj, by=request.user, note=form.cleaned_data["resolution"])

    @admin.action(description="Resolve selected hints (say how)")
    def resolve_selected(self, request, queryset):
        hints = queryset.select_related("source", "other_source")

        def resolve_each(note: str) -> None:
            apply_to_each(
                request,
                hints,
                lambda hint: services.resolve_conflict(hint=hint, by=request.user, note=note),
                name=lambda hint: f"“{hint.source.title}” / “{hint.other_source.title}”",
                done="Resolved",
            )

        return with_reason(
            request,
            self,
            template=REASON_TEMPLATE,
            apply=resolve_each,
            context={
                "title": "Resolve conflict hints",
                "verb": "Resolve",
                "explanation": "Say how each conflict was settled (e.g. which source is right).",
                "hints": hints,
            },
        )


@admin.register(KnowledgeGap)
class KnowledgeGapAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    """Questions agents could not answer from eligible knowledge, most frequent first."""

    list_display = ["topic", "example_query", "occurrences", "withheld_summary", "audience", "channel", "last_seen"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter), "audience", "channel"]
    list_select_related = ["tenant"]
    search_fields = ["topic", "example_query"]
    readonly_fields = [
        "tenant",
        "topic",
        "example_query",
        "occurrences",
        "withheld",
        "audience",
        "channel",
        "first_seen",
        "last_seen",
    ]

    @admin.display(description="Matched but withheld")
    def withheld_summary(self, gap):
        if not gap.withheld:
            return "—"
        return ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in sorted(gap.withheld.items()))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
