from django.db import models


class SourceKind(models.TextChoices):
    HELP_ARTICLE = "help_article", "Help article"
    SOP = "sop", "Standard operating procedure"
    POLICY = "policy", "Policy"
    FAQ = "faq", "FAQ"
    MACRO = "macro", "Reply template"
    OTHER = "other", "Other"


class Lifecycle(models.TextChoices):
    """Only approved sources are ever retrieved. Deleted is a tombstone: the text is gone."""

    DRAFT = "draft", "Draft"
    APPROVED = "approved", "Approved"
    DEPRECATED = "deprecated", "Deprecated"
    DELETED = "deleted", "Deleted"


class Visibility(models.TextChoices):
    PUBLIC = "public", "Public (customers and employees)"
    INTERNAL = "internal", "Internal (employees only)"
    RESTRICTED = "restricted", "Restricted (only the roles named)"
    HUMAN_ONLY = "human_only", "Human only (never given to an agent)"


class StalePolicy(models.TextChoices):
    EXCLUDE = "exclude", "Exclude from retrieval until reviewed"
    WARN = "warn", "Keep using it, with a warning in the trace"


class Audience(models.TextChoices):
    """Who will read the answer: a customer, or an employee."""

    CUSTOMER = "customer", "Customer-facing"
    INTERNAL = "internal", "Internal (employees)"


class SourceAction(models.TextChoices):
    CREATED = "created", "Created"
    EDITED = "edited", "Edited"
    APPROVED = "approved", "Approved"
    REVIEWED = "reviewed", "Reviewed"
    MARKED_STALE = "marked_stale", "Marked stale"
    DEPRECATED = "deprecated", "Deprecated"
    RETURNED_TO_DRAFT = "returned_to_draft", "Returned to draft"
    DELETED = "deleted", "Deleted (text purged)"


class ConflictKind(models.TextChoices):
    SAME_TITLE = "same_title", "Same title"
    NEAR_IDENTICAL_PASSAGE = "near_identical_passage", "Near-identical passage"


# Scope dimensions: (model field, token prefix, label). Empty list on a source = all values.
SCOPE_DIMENSIONS = (
    ("brands", "brand", "brand"),
    ("regions", "region", "region"),
    ("products", "product", "product line"),
    ("segments", "segment", "customer segment"),
    ("channels", "channel", "channel"),
)
