"""``knowledge.retrieve``: the only way knowledge reaches a model.

Every rule (tenant, lifecycle, freshness, visibility, scope) is a condition of the one SQL
query that finds passages, built by ``eligible_sources``; nothing is filtered afterwards and
nothing is cached, so a deprecation or a deletion holds from the very next query. Ranking
differs by database (PostgreSQL full-text search, or a portable lexical score), eligibility
never does: both rank the same eligible rows.
"""

import datetime
from dataclasses import dataclass, field
from functools import reduce
from operator import or_

from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Count, F, IntegerField, Q, Value, When
from django.db.models.functions import Now
from django.utils import timezone

from apps.audit.redaction import redact

from .choices import SCOPE_DIMENSIONS, Audience, Lifecycle, StalePolicy, Visibility
from .models import ALL, KnowledgeGap, KnowledgeSource, Passage, scope_token
from .text import coverage, query_terms, query_words, stem, topic_of


class RetrievalStatus:
    MATCHED = "matched"  # at least one passage answers the question well
    WEAK = "weak"  # eligible passages matched some words, none well: clarify rather than answer
    GAP = "gap"  # no eligible passage matched at all: fall back or hand off; counted for owners


@dataclass(frozen=True)
class RetrievalContext:
    """Who is asking, for whom. ``roles`` are the acting user's role kinds in the tenant;
    the scope values describe the subject (the customer), lower-case codes as on sources.
    An unknown value (empty) matches only sources not scoped on that dimension."""

    tenant_id: int
    audience: str = Audience.CUSTOMER
    roles: frozenset[str] = frozenset()
    channel: str = ""
    region: str = ""
    segment: str = ""
    product: str = ""
    brand: str = ""

    def __post_init__(self):
        if self.audience not in Audience.values:
            raise ValueError(f"audience must be one of {', '.join(Audience.values)}, not {self.audience!r}")
        object.__setattr__(self, "roles", frozenset(self.roles))
        for name in ("channel", "region", "segment", "product", "brand"):
            object.__setattr__(self, name, (getattr(self, name) or "").strip().lower())

    def scope_value(self, dimension: str) -> str:
        """The subject's value on a scope dimension (brand, region, product, segment, channel)."""
        return getattr(self, dimension)


@dataclass(frozen=True)
class RetrievedPassage:
    passage_id: int
    source_id: int
    source_title: str
    source_version: int
    source_kind: str
    owner: str
    last_reviewed_on: datetime.date | None
    review_due_on: datetime.date | None
    origin_url: str
    heading: str
    text: str
    score: float
    coverage: float
    stale: bool  # overdue for review but its policy allows use: say so in the trace

    def citation(self) -> dict:
        """What a trace or an audit event keeps: which source, which version, whose."""
        return {
            "source_id": self.source_id,
            "title": self.source_title,
            "version": self.source_version,
            "owner": self.owner,
            "review_due_on": self.review_due_on.isoformat() if self.review_due_on else None,
            "passage_id": self.passage_id,
            "stale": self.stale,
        }


@dataclass(frozen=True)
class RetrievalResult:
    status: str
    passages: list[RetrievedPassage]
    terms: list[str]
    backend: str
    # On a gap: sources of this tenant that matched the words but were not eligible, by
    # reason (counts only, never their text), so owners see "the answer exists but is stale".
    withheld: dict[str, int] = field(default_factory=dict)

    @property
    def is_gap(self) -> bool:
        return self.status == RetrievalStatus.GAP


# --- The rules, as one query condition ----------------------------------------------------


def _visibility_condition(context: RetrievalContext) -> Q:
    if context.audience == Audience.CUSTOMER:
        return Q(visibility=Visibility.PUBLIC)
    condition = Q(visibility__in=[Visibility.PUBLIC, Visibility.INTERNAL])
    role_tokens = [Q(scope_tokens__contains=scope_token("role", kind)) for kind in sorted(context.roles)]
    if role_tokens:
        condition |= Q(visibility=Visibility.RESTRICTED) & reduce(or_, role_tokens)
    return condition


def _scope_condition(context: RetrievalContext) -> Q:
    condition = Q()
    for _field, prefix, _label in SCOPE_DIMENSIONS:
        unscoped = Q(scope_tokens__contains=scope_token(prefix, ALL))
        value = context.scope_value(prefix)
        condition &= unscoped | Q(scope_tokens__contains=scope_token(prefix, value)) if value else unscoped
    return condition


def eligible_sources(context: RetrievalContext, today: datetime.date | None = None):
    """The sources whose passages may reach a model in this context (a lazy queryset)."""
    today = today or timezone.localdate()
    fresh = Q(review_due_on__gte=today) | Q(stale_policy=StalePolicy.WARN)
    return KnowledgeSource.objects.filter(
        Q(tenant_id=context.tenant_id, status=Lifecycle.APPROVED)
        & fresh
        & _visibility_condition(context)
        & _scope_condition(context)
    )


# --- Search backends ------------------------------------------------------------------------


def search_backend() -> str:
    configured = getattr(settings, "KNOWLEDGE_SEARCH_BACKEND", "auto")
    if configured == "auto":
        return "postgres" if connection.vendor == "postgresql" else "lexical"
    if configured == "lexical" or (configured == "postgres" and connection.vendor == "postgresql"):
        return configured
    raise ImproperlyConfigured(
        f"KNOWLEDGE_SEARCH_BACKEND={configured!r}: use auto, lexical, or postgres (on PostgreSQL only)."
    )


def _tsquery(words: list[str]) -> SearchQuery:
    # Words are [a-z0-9]+ only (see text.query_words), so the raw tsquery is well formed.
    return SearchQuery(" | ".join(words), search_type="raw", config="english")


def _matching_passages(passages, words: list[str], backend: str):
    """``passages`` narrowed to those matching any of the words, annotated with ``score``."""
    if backend == "postgres":
        query = _tsquery(words)
        return passages.filter(search_vector=query).annotate(
            # ts_rank, not ts_rank_cd: ranking is most of the query's cost, and cover density
            # cost about 3x as much on 100,000 passages (bench/retrieval.py) for an order no
            # better founded on questions that are an OR of words. Heading (A) outweighs text (B).
            score=SearchRank(F("search_vector"), query)
        )
    terms = list(dict.fromkeys(stem(word) for word in words))
    matches = [Q(text__icontains=term) | Q(heading__icontains=term) for term in terms]
    # A term in the heading (the title or section) counts double.
    score = reduce(
        lambda total, term: (
            total
            + Case(When(heading__icontains=term, then=Value(2)), default=Value(0), output_field=IntegerField())
            + Case(When(text__icontains=term, then=Value(1)), default=Value(0), output_field=IntegerField())
        ),
        terms,
        Value(0, output_field=IntegerField()),
    )
    return passages.filter(reduce(or_, matches)).annotate(score=score)


# What a result row holds, and its order: one definition, so bench/retrieval.py's
# ungoverned baseline differs from retrieve only in its WHERE clause.
RESULT_COLUMNS = (
    "pk",
    "heading",
    "text",
    "score",
    "source_id",
    "source__title",
    "source__version",
    "source__kind",
    "source__owner__username",
    "source__last_reviewed_on",
    "source__review_due_on",
    "source__origin_url",
)
RESULT_ORDER = ("-score", "source_id", "position")


@dataclass(frozen=True)
class Question:
    text: str  # redacted
    words: list[str]  # for PostgreSQL, which stems them itself
    terms: list[str]  # stems: for the lexical ranking and coverage


def prepare_question(query: str) -> Question:
    """Search with the question's PII replaced by placeholders ("[EMAIL]"): an address or a
    card number answers nothing, and must not reach SQL logs or the gap report."""
    redacted, _kinds = redact(query[:4000])
    text = str(redacted)
    return Question(text, query_words(text), query_terms(text))


def ranked_rows(passages, words: list[str], backend: str, k: int):
    """The ``k`` best of ``passages`` matching the words, as RESULT_COLUMNS dictionaries."""
    return _matching_passages(passages, words, backend).order_by(*RESULT_ORDER).values(*RESULT_COLUMNS)[:k]


def match_status(best_coverage: float) -> str:
    """Matched or weak, for results that are not a gap."""
    return RetrievalStatus.MATCHED if best_coverage >= settings.KNOWLEDGE_MIN_COVERAGE else RetrievalStatus.WEAK


def retrieve(query: str, context: RetrievalContext, k: int = 5, *, record_gap: bool = True) -> RetrievalResult:
    """The best ``k`` eligible passages for ``query`` in ``context``.

    One query does the rules and the ranking. A gap (no eligible passage matched any word)
    is counted for the owners' report unless ``record_gap`` is off (evaluation runs).
    """
    if not 1 <= k <= 50:
        raise ValueError("k must be between 1 and 50")
    question = prepare_question(query)
    terms = question.terms
    backend = search_backend()
    if not terms:
        return RetrievalResult(RetrievalStatus.WEAK, [], terms, backend)
    today = timezone.localdate()
    sources = eligible_sources(context, today)
    eligible_passages = Passage.objects.filter(tenant_id=context.tenant_id, source__in=sources)
    passages = [
        RetrievedPassage(
            passage_id=row["pk"],
            source_id=row["source_id"],
            source_title=row["source__title"],
            source_version=row["source__version"],
            source_kind=row["source__kind"],
            owner=row["source__owner__username"],
            last_reviewed_on=row["source__last_reviewed_on"],
            review_due_on=row["source__review_due_on"],
            origin_url=row["source__origin_url"],
            heading=row["heading"],
            text=row["text"],
            score=float(row["score"]),
            coverage=coverage(terms, f"{row['heading']} {row['text']}"),
            stale=row["source__review_due_on"] is None or row["source__review_due_on"] < today,
        )
        for row in ranked_rows(eligible_passages, question.words, backend, k)
    ]
    if not passages:
        withheld = withheld_matches(context, question.words, backend, today)
        if record_gap:
            record_knowledge_gap(question.text, context, terms, withheld)
        return RetrievalResult(RetrievalStatus.GAP, [], terms, backend, withheld)
    return RetrievalResult(match_status(max(passage.coverage for passage in passages)), passages, terms, backend)


# --- Gaps -------------------------------------------------------------------------------------


def withheld_matches(context: RetrievalContext, words: list[str], backend: str, today: datetime.date) -> dict:
    """Of this tenant's sources whose passages match the words, how many were kept back and
    why (first reason that applies, in the order the rules run). Counts only: for the
    owners' gap report and the trace, never for the model."""
    matching_sources = _matching_passages(Passage.objects.filter(tenant_id=context.tenant_id), words, backend)
    matching_sources = matching_sources.values("source_id")
    not_fresh = ~(Q(review_due_on__gte=today) | Q(stale_policy=StalePolicy.WARN))
    reasons = {
        "draft": Q(status=Lifecycle.DRAFT),
        "deprecated": Q(status=Lifecycle.DEPRECATED),
        "stale": Q(status=Lifecycle.APPROVED) & not_fresh,
        "human_only": Q(status=Lifecycle.APPROVED, visibility=Visibility.HUMAN_ONLY) & ~not_fresh,
    }
    eligible_now = Q(status=Lifecycle.APPROVED) & ~not_fresh & ~Q(visibility=Visibility.HUMAN_ONLY)
    reasons["visibility"] = eligible_now & ~_visibility_condition(context)
    reasons["scope"] = eligible_now & _visibility_condition(context) & ~_scope_condition(context)
    counts = KnowledgeSource.objects.filter(tenant_id=context.tenant_id, pk__in=matching_sources).aggregate(
        # Prefixed: an aggregate named "visibility" would shadow the field in the conditions.
        **{f"withheld_{reason}": Count("pk", filter=condition) for reason, condition in reasons.items()}
    )
    return {reason: counts[f"withheld_{reason}"] for reason in reasons if counts[f"withheld_{reason}"]}


def record_knowledge_gap(query: str, context: RetrievalContext, terms: list[str], withheld: dict) -> None:
    """Count one more occurrence of this topic (one row per tenant and topic). ``query`` is
    already redacted."""
    topic = topic_of(terms)
    updates = {
        "example_query": query[:500],
        "audience": context.audience,
        "channel": context.channel,
        "withheld": withheld,
        "last_seen": Now(),
    }
    existing = KnowledgeGap.objects.filter(tenant_id=context.tenant_id, topic=topic)
    if existing.update(occurrences=F("occurrences") + 1, **updates):
        return
    try:
        with transaction.atomic():
            KnowledgeGap.objects.create(tenant_id=context.tenant_id, topic=topic, **updates)
    except IntegrityError:  # another worker recorded the same new topic first
        existing.update(occurrences=F("occurrences") + 1, **updates)
