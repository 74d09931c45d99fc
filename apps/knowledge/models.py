import datetime
import re

from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from apps.accounts.choices import RoleKind
from apps.accounts.models import Membership, Tenant
from apps.accounts.permissions import TenantScopedQuerySet
from apps.agents.choices import Channel

from .choices import SCOPE_DIMENSIONS, ConflictKind, Lifecycle, SourceAction, SourceKind, StalePolicy, Visibility
from .text import normalized_title

SCOPE_VALUE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
ALL = "*"


def scope_token(prefix: str, value: str) -> str:
    return f"|{prefix}:{value}|"


def build_scope_tokens(source: "KnowledgeSource") -> str:
    """One searchable string holding a source's whole scope, e.g.
    ``|brand:*|region:eu|region:uk|...|role:security|``. ``*`` marks an unscoped dimension
    (all values). Retrieval tests it with LIKE, which both databases evaluate the same way."""
    tokens = []
    for field, prefix, _label in SCOPE_DIMENSIONS:
        values = getattr(source, field) or [ALL]
        tokens.extend(f"{prefix}:{value}" for value in values)
    tokens.extend(f"role:{kind}" for kind in source.restricted_roles or [])
    return "|" + "|".join(tokens) + "|"


class KnowledgeSourceQuerySet(TenantScopedQuerySet):
    def with_list_relations(self):
        return self.select_related("tenant", "owner")

    def overdue(self, today: datetime.date):
        """Approved and past the review date: ``KnowledgeSource.is_overdue`` as a query (the
        same rule, for reports that count rather than look at one source)."""
        return self.filter(status=Lifecycle.APPROVED).filter(
            models.Q(review_due_on__isnull=True) | models.Q(review_due_on__lt=today)
        )


class KnowledgeSource(models.Model):
    """A document agents may draw on: owned, reviewed on a cadence, scoped, and approved
    before any agent sees it. Deleting purges the text; the row stays as a tombstone."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="knowledge_sources")
    title = models.CharField(max_length=300)
    title_key = models.CharField(
        max_length=300, editable=False, default="", help_text="The title folded, for matching."
    )
    kind = models.CharField(max_length=20, choices=SourceKind.choices, default=SourceKind.HELP_ARTICLE)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="owned_knowledge_sources",
        help_text="The person who keeps this source true and reviews it. Required.",
    )
    body = models.TextField(blank=True, help_text="The text (plain text or Markdown). Stored as passages.")
    origin_url = models.URLField(blank=True, max_length=500, help_text="Where the original lives, if anywhere.")
    version = models.PositiveIntegerField(default=1, editable=False, help_text="Goes up with every change of text.")
    status = models.CharField(max_length=12, choices=Lifecycle.choices, default=Lifecycle.DRAFT, editable=False)

    visibility = models.CharField(max_length=12, choices=Visibility.choices, default=Visibility.INTERNAL)
    restricted_roles = models.JSONField(
        default=list, blank=True, help_text="For restricted sources: the role kinds that may see it."
    )
    brands = models.JSONField(default=list, blank=True, help_text="Empty means every brand.")
    regions = models.JSONField(default=list, blank=True, help_text="Empty means every region.")
    products = models.JSONField(default=list, blank=True, help_text="Empty means every product line.")
    segments = models.JSONField(default=list, blank=True, help_text="Empty means every customer segment.")
    channels = models.JSONField(default=list, blank=True, help_text="Empty means every channel.")
    scope_tokens = models.TextField(editable=False, default="")

    review_cadence_days = models.PositiveIntegerField(
        default=90, help_text="How often the owner must confirm the source is still true."
    )
    last_reviewed_on = models.DateField(null=True, blank=True, editable=False)
    review_due_on = models.DateField(null=True, blank=True, editable=False, db_index=True)
    stale_policy = models.CharField(max_length=10, choices=StalePolicy.choices, default=StalePolicy.EXCLUDE)
    stale_since = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the freshness sweep found it overdue."
    )

    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    approved_at = models.DateTimeField(null=True, blank=True, editable=False)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)
    deletion_reason = models.TextField(blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords()
    objects = KnowledgeSourceQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__name", "title"]
        verbose_name = "knowledge source"
        permissions = [
            ("approve_knowledgesource", "Can approve knowledge sources"),
            ("purge_knowledgesource", "Can delete a knowledge source (purges its text)"),
        ]
        indexes = [
            models.Index(fields=["tenant", "status"], name="knowledge_source_tenant_status"),
            models.Index(fields=["tenant", "title_key"], name="knowledge_source_title_key"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=Lifecycle.values), name="knowledge_status_known"),
            models.CheckConstraint(
                condition=models.Q(visibility__in=Visibility.values), name="knowledge_visibility_known"
            ),
            models.CheckConstraint(
                condition=~models.Q(status=Lifecycle.DELETED) | models.Q(body=""), name="knowledge_deleted_has_no_text"
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def save(self, *args, **kwargs) -> None:
        self.title_key = normalized_title(self.title)[:300]
        self.scope_tokens = build_scope_tokens(self)
        self.review_due_on = (
            self.last_reviewed_on + datetime.timedelta(days=self.review_cadence_days) if self.last_reviewed_on else None
        )
        super().save(*args, **kwargs)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.owner_id is None:
            errors["owner"] = "Every source needs an owner: the person who keeps it true."
        elif (
            self.tenant_id
            and not Membership.objects.filter(user_id=self.owner_id, role__tenant_id=self.tenant_id).exists()
        ):
            errors["owner"] = "The owner must hold a role in this source's tenant."
        for field, _prefix, label in SCOPE_DIMENSIONS:
            values = getattr(self, field)
            if not isinstance(values, list) or not all(isinstance(v, str) and SCOPE_VALUE.match(v) for v in values):
                errors[field] = (
                    f"Enter each {label} as a short code of lower-case letters, digits, '-' or '_' (e.g. eu, us-east)."
                )
            elif len(set(values)) != len(values):
                errors[field] = f"Each {label} may appear once."
        if isinstance(self.channels, list) and "channels" not in errors:
            unknown = [channel for channel in self.channels if channel not in Channel.values]
            if unknown:
                errors["channels"] = f"Unknown channels {', '.join(unknown)}: pick from {', '.join(Channel.values)}."
        if not isinstance(self.restricted_roles, list) or not all(
            kind in RoleKind.values for kind in self.restricted_roles
        ):
            errors["restricted_roles"] = f"Pick role kinds from: {', '.join(RoleKind.values)}."
        elif self.visibility == Visibility.RESTRICTED and not self.restricted_roles:
            errors["restricted_roles"] = "A restricted source must name the roles that may see it."
        elif self.visibility != Visibility.RESTRICTED and self.restricted_roles:
            errors["restricted_roles"] = "Only restricted sources name roles; clear them or make the source restricted."
        if not 1 <= (self.review_cadence_days or 0) <= 3650:
            errors["review_cadence_days"] = "Review at least every 3650 days (ten years) and at most daily."
        if self.status != Lifecycle.DELETED and not (self.body or "").strip():
            errors["body"] = "A source needs text: paste it or upload a .txt, .md or .html file."
        if errors:
            raise ValidationError(errors)

    def is_overdue(self, today: datetime.date) -> bool:
        """Approved and past its review date: stale (excluded from retrieval unless its policy is warn)."""
        return self.status == Lifecycle.APPROVED and (self.review_due_on is None or self.review_due_on < today)


class Passage(models.Model):
    """A retrievable piece of a source. Rebuilt whenever the source's text changes; deleted
    with it. On PostgreSQL a trigger keeps ``search_vector`` (heading weighted above text)."""

    source = models.ForeignKey(KnowledgeSource, on_delete=models.CASCADE, related_name="passages")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveIntegerField()
    heading = models.CharField(max_length=500)
    text = models.TextField()
    fingerprint = models.CharField(max_length=40, blank=True, help_text="Text with numbers masked, hashed.")
    search_vector = SearchVectorField(null=True, editable=False)

    class Meta:
        ordering = ["source", "position"]
        constraints = [
            models.UniqueConstraint(fields=["source", "position"], name="passage_position_unique_in_source"),
        ]
        indexes = [
            models.Index(fields=["tenant", "fingerprint"], name="passage_tenant_fingerprint"),
        ]

    def __str__(self) -> str:
        return f"{self.heading} #{self.position}"


class SourceEvent(models.Model):
    """One step in a source's life, with who, when and why: what the source page lists."""

    source = models.ForeignKey(KnowledgeSource, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=20, choices=SourceAction.choices)
    from_status = models.CharField(max_length=12, choices=Lifecycle.choices, blank=True)
    to_status = models.CharField(max_length=12, choices=Lifecycle.choices, blank=True)
    version = models.PositiveIntegerField()
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    at = models.DateTimeField(auto_now_add=True)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name = "source event"

    def __str__(self) -> str:
        return f"{self.get_action_display()} by {self.by or 'the system'}"


class ConflictHintQuerySet(TenantScopedQuerySet):
    def open(self):
        return self.filter(resolved_at__isnull=True)


class ConflictHint(models.Model):
    """Two approved sources in overlapping scope that look like two versions of one truth.
    A hint for their owners, not a block: only they can say which one is right."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    source = models.ForeignKey(KnowledgeSource, on_delete=models.CASCADE, related_name="+")
    other_source = models.ForeignKey(KnowledgeSource, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=24, choices=ConflictKind.choices)
    detail = models.CharField(max_length=300)
    found_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    resolution = models.CharField(max_length=300, blank=True)

    objects = ConflictHintQuerySet.as_manager()

    class Meta:
        ordering = ["-found_at"]
        constraints = [
            models.UniqueConstraint(fields=["source", "other_source", "kind"], name="conflict_hint_unique_pair"),
            models.CheckConstraint(
                condition=models.Q(source__lt=models.F("other_source")), name="conflict_hint_pair_ordered"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.source_id} / {self.other_source_id}"


class KnowledgeGap(models.Model):
    """A question no eligible passage could answer, counted per topic for the owners."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    topic = models.CharField(max_length=200, help_text="The question's search terms, sorted.")
    example_query = models.CharField(max_length=500, help_text="The latest question, with PII redacted.")
    audience = models.CharField(max_length=12, blank=True)
    channel = models.CharField(max_length=20, blank=True)
    occurrences = models.PositiveIntegerField(default=1)
    withheld = models.JSONField(
        default=dict,
        blank=True,
        help_text="Last time: how many sources matched but were not eligible, by reason (e.g. stale).",
    )
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField()

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-occurrences", "-last_seen"]
        verbose_name = "knowledge gap"
        constraints = [models.UniqueConstraint(fields=["tenant", "topic"], name="knowledge_gap_topic_unique")]

    def __str__(self) -> str:
        return self.topic
