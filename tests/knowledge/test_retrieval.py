"""Every eligibility rule, each with a control that shows the words did match. Runs on
SQLite (make test, lexical ranking) and on PostgreSQL (make test-services, full-text
search), so the rules are proven on both."""

import datetime

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.utils import timezone

from apps import knowledge
from apps.knowledge import services
from apps.knowledge.choices import Audience, Lifecycle, StalePolicy, Visibility
from apps.knowledge.models import KnowledgeGap, KnowledgeSource
from apps.knowledge.retrieval import RetrievalContext, RetrievalStatus, eligible_sources, search_backend

from ..accounts.factories import member
from .factories import source

pytestmark = pytest.mark.django_db

QUESTION = "How long do I have to return a damaged blender for a refund?"
BODY = "Damaged blenders can be returned for a full refund within 30 days of delivery."


def titles(result):
    return sorted({passage.source_title for passage in result.passages})


def ask(context, query=QUESTION, k=10):
    return knowledge.retrieve(query, context, k)


def test_approved_public_source_answers_a_customer(tenant, owner, customer_context):
    made = source(tenant, owner, title="Blender returns", body=BODY, visibility=Visibility.PUBLIC)
    result = ask(customer_context)
    assert result.status == RetrievalStatus.MATCHED
    assert titles(result) == ["Blender returns"]
    cited = result.passages[0].citation()
    assert cited["source_id"] == made.pk and cited["version"] == 1 and cited["owner"] == owner.username
    assert cited["review_due_on"] == made.review_due_on.isoformat()
    assert result.backend == ("postgres" if connection.vendor == "postgresql" else "lexical")


@pytest.mark.parametrize("status", [Lifecycle.DRAFT, Lifecycle.DEPRECATED, Lifecycle.DELETED])
def test_only_approved_sources_are_retrieved(tenant, owner, customer_context, status):
    source(tenant, owner, title="Blender returns", body=BODY, visibility=Visibility.PUBLIC)
    source(tenant, owner, title=f"Blender returns ({status})", body=BODY, visibility=Visibility.PUBLIC, status=status)
    assert titles(ask(customer_context)) == ["Blender returns"]


def _make_overdue(made, days=1):
    """Pretend the last review was long enough ago that the review fell due ``days`` ago."""
    reviewed = timezone.localdate() - datetime.timedelta(days=made.review_cadence_days + days)
    KnowledgeSource.objects.filter(pk=made.pk).update(
        last_reviewed_on=reviewed, review_due_on=reviewed + datetime.timedelta(days=made.review_cadence_days)
    )


def test_overdue_source_is_excluded_by_default(tenant, owner, customer_context):
    source(tenant, owner, title="Blender returns", body=BODY, visibility=Visibility.PUBLIC)
    overdue = source(tenant, owner, title="Old blender returns", body=BODY, visibility=Visibility.PUBLIC)
    _make_overdue(overdue)
    # Excluded by date at once, whether or not the freshness sweep has flagged it yet.
    assert KnowledgeSource.objects.get(pk=overdue.pk).stale_since is None
    assert titles(ask(customer_context)) == ["Blender returns"]


def test_source_due_today_is_still_fresh(tenant, owner, customer_context):
    made = source(tenant, owner, title="Blender returns", body=BODY, visibility=Visibility.PUBLIC)
    _make_overdue(made, days=0)
    assert titles(ask(customer_context)) == ["Blender returns"]


def test_overdue_source_with_warn_policy_is_used_and_flagged_stale(tenant, owner, customer_context):
    made = source(
        tenant, owner, title="Blender returns", body=BODY, visibility=Visibility.PUBLIC, stale_policy=StalePolicy.WARN
    )
    assert ask(customer_context).passages[0].stale is False
    _make_overdue(made)
    result = ask(customer_context)
    assert titles(result) == ["Blender returns"]
    assert result.passages[0].stale is True and result.passages[0].citation()["stale"] is True


@pytest.mark.parametrize(
    ("visibility", "audience", "expected"),
    [
        (Visibility.PUBLIC, Audience.CUSTOMER, True),
        (Visibility.PUBLIC, Audience.INTERNAL, True),
        (Visibility.INTERNAL, Audience.CUSTOMER, False),
        (Visibility.INTERNAL, Audience.INTERNAL, True),
        (Visibility.HUMAN_ONLY, Audience.CUSTOMER, False),
        (Visibility.HUMAN_ONLY, Audience.INTERNAL, False),
    ],
)
def test_visibility_by_audience(tenant, owner, visibility, audience, expected):
    source(tenant, owner, title="Control", body=BODY, visibility=Visibility.PUBLIC)
    source(tenant, owner, title="Under test", body=BODY, visibility=visibility)
    context = RetrievalContext(tenant_id=tenant.pk, audience=audience, roles={"admin", "support_lead"})
    assert titles(ask(context)) == (["Control", "Under test"] if expected else ["Control"])


def test_restricted_source_only_for_the_roles_named(tenant, owner):
    source(tenant, owner, title="Control", body=BODY, visibility=Visibility.PUBLIC)
    source(
        tenant,
        owner,
        title="Fraud playbook",
        body=BODY,
        visibility=Visibility.RESTRICTED,
        restricted_roles=["support_lead", "security"],
    )

    def for_roles(*roles, audience=Audience.INTERNAL):
        return titles(ask(RetrievalContext(tenant_id=tenant.pk, audience=audience, roles=set(roles))))

    assert for_roles("support_lead") == ["Control", "Fraud playbook"]
    assert for_roles("support_agent", "security") == ["Control", "Fraud playbook"]
    assert for_roles("support_agent") == ["Control"]
    assert for_roles() == ["Control"]
    # A role name that merely contains a granted one is not that role.
    assert for_roles("lead", "support") == ["Control"]
    # Restricted content is internal by nature: never to a customer, whatever the actor holds.
    assert for_roles("support_lead", audience=Audience.CUSTOMER) == ["Control"]


def test_other_tenants_sources_are_never_returned(tenant, other_tenant, owner, customer_context):
    other_owner = member(other_tenant, "knowledge_owner", username="globex.owner")
    source(other_tenant, other_owner, title="Globex blender returns", body=BODY, visibility=Visibility.PUBLIC)
    assert ask(customer_context).status == RetrievalStatus.GAP
    source(tenant, owner, title="Acme blender returns", body=BODY, visibility=Visibility.PUBLIC)
    assert titles(ask(customer_context)) == ["Acme blender returns"]
    other_context = RetrievalContext(tenant_id=other_tenant.pk, audience=Audience.CUSTOMER)
    assert titles(ask(other_context)) == ["Globex blender returns"]


@pytest.mark.parametrize(
    ("field", "values", "context_value", "expected"),
    [
        ("regions", ["eu"], "us", False),
        ("regions", ["eu", "us"], "us", True),
        ("regions", ["eu"], "", False),  # unknown region: only unscoped sources
        ("segments", ["enterprise"], "consumer", False),
        ("segments", ["consumer"], "consumer", True),
        ("channels", ["email"], "web_chat", False),
        ("channels", ["web_chat", "email"], "web_chat", True),
        ("products", ["blenders"], "", False),
        ("products", ["blenders"], "blenders", True),
        ("brands", ["acme-pro"], "acme", False),
        ("brands", ["acme"], "acme", True),
    ],
)
def test_scope_dimensions(tenant, owner, field, values, context_value, expected):
    source(tenant, owner, title="Control", body=BODY, visibility=Visibility.PUBLIC)
    source(tenant, owner, title="Scoped", body=BODY, visibility=Visibility.PUBLIC, **{field: values})
    dimension = {"regions": "region", "segments": "segment", "channels": "channel", "products": "product"}.get(
        field, "brand"
    )
    context = RetrievalContext(tenant_id=tenant.pk, audience=Audience.CUSTOMER, **{dimension: context_value})
    assert titles(ask(context)) == (["Control", "Scoped"] if expected else ["Control"])


def test_scope_values_do_not_match_by_prefix(tenant, owner):
    """ "eu" must not match a source scoped to "eu-west", nor "us" one scoped to "us-gov"."""
    source(tenant, owner, title="Control", body=BODY, visibility=Visibility.PUBLIC)
    source(tenant, owner, title="Gov cloud", body=BODY, visibility=Visibility.PUBLIC, regions=["us-gov", "eu-west"])
    for region in ("us", "eu", "gov", "west"):
        context = RetrievalContext(tenant_id=tenant.pk, audience=Audience.CUSTOMER, region=region)
        assert titles(ask(context)) == ["Control"], region
    context = RetrievalContext(tenant_id=tenant.pk, audience=Audience.CUSTOMER, region="US-Gov")
    assert titles(ask(context)) == ["Control", "Gov cloud"]


def test_eu_policy_never_reaches_a_us_enterprise_customer(tenant, owner):
    source(tenant, owner, title="EU consumer refunds", body=BODY, visibility=Visibility.PUBLIC, regions=["eu"])
    source(
        tenant,
        owner,
        title="US enterprise refunds",
        body=BODY,
        visibility=Visibility.PUBLIC,
        regions=["us"],
        segments=["enterprise"],
    )
    context = RetrievalContext(tenant_id=tenant.pk, audience=Audience.CUSTOMER, region="us", segment="enterprise")
    assert titles(ask(context)) == ["US enterprise refunds"]


def test_every_rule_is_in_the_one_query(tenant, owner, customer_context, django_assert_num_queries):
    """One SELECT does rules and ranking; the result is never filtered in Python after."""
    source(tenant, owner, title="Blender returns", body=BODY, visibility=Visibility.PUBLIC)
    source(tenant, owner, title="Internal blender returns", body=BODY, visibility=Visibility.INTERNAL)
    with django_assert_num_queries(1) as captured:
        result = ask(customer_context)
    assert titles(result) == ["Blender returns"]
    sql = captured.captured_queries[0]["sql"]
    for column in ("status", "review_due_on", "visibility", "scope_tokens", "tenant_id"):
        assert column in sql


def test_eligible_sources_matches_what_retrieve_returns(tenant, owner, customer_context):
    public = source(tenant, owner, title="Blender returns", body=BODY, visibility=Visibility.PUBLIC)
    source(tenant, owner, title="Scoped away", body=BODY, visibility=Visibility.PUBLIC, regions=["eu"])
    assert list(eligible_sources(customer_context).values_list("pk", flat=True)) == [public.pk]


def test_deletion_is_immediate_and_leaves_no_text(tenant, owner, customer_context):
    made = source(tenant, owner, title="Blender returns", body=BODY, visibility=Visibility.PUBLIC)
    assert titles(ask(customer_context)) == ["Blender returns"]
    services.purge_source(source=made, by=owner, reason="Policy withdrawn by legal")
    result = ask(customer_context)
    assert result.status == RetrievalStatus.GAP and result.passages == []
    # Nothing left to find, even for a query that ignores every governance rule.
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM knowledge_passage WHERE source_id = %s", [made.pk])
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM knowledge_knowledgesource WHERE body LIKE %s", ["%blender%"])
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT count(*) FROM knowledge_historicalknowledgesource WHERE body LIKE %s", ["%lender%"])
        assert cursor.fetchone()[0] == 0
    tombstone = KnowledgeSource.objects.get(pk=made.pk)
    assert (tombstone.status, tombstone.title, tombstone.owner, tombstone.deleted_by) == (
        Lifecycle.DELETED,
        "Blender returns",
        owner,
        owner,
    )
    assert tombstone.deletion_reason == "Policy withdrawn by legal" and tombstone.deleted_at is not None


def test_deleted_source_is_not_in_the_postgres_index(tenant, owner, customer_context):
    if connection.vendor != "postgresql":
        pytest.skip("the full-text index exists on PostgreSQL only")
    made = source(tenant, owner, title="Blender returns", body=BODY, visibility=Visibility.PUBLIC)
    with connection.cursor() as cursor:
        query = "SELECT count(*) FROM knowledge_passage WHERE search_vector @@ to_tsquery('english', 'blender')"
        cursor.execute(query)
        assert cursor.fetchone()[0] == 1
        services.purge_source(source=made, by=owner, reason="Withdrawn")
        cursor.execute(query)
        assert cursor.fetchone()[0] == 0


def test_gap_is_distinct_from_a_weak_match_and_is_counted(tenant, owner, customer_context):
    source(tenant, owner, title="Shipping times", body="Orders ship within two business days.", visibility="public")
    weak = ask(customer_context, "Do orders to Alaska ship faster with express couriers?")
    assert weak.status == RetrievalStatus.WEAK and weak.passages  # words matched, the question is not answered
    assert not KnowledgeGap.objects.exists()

    gap = ask(customer_context, "Can I pay with cryptocurrency, my email is jo@example.com")
    assert gap.status == RetrievalStatus.GAP and gap.passages == [] and gap.is_gap
    ask(customer_context, "can I PAY with Cryptocurrency? email: sam.lee@example.org")
    recorded = KnowledgeGap.objects.get()
    assert recorded.occurrences == 2 and recorded.tenant_id == tenant.pk
    # The topic is the question's words without the address: the same question asked twice.
    assert recorded.topic == "cryptocurrenc email pay"
    assert "sam.lee" not in recorded.example_query and "example.org" not in recorded.example_query


def test_gap_reports_what_was_withheld_and_why(tenant, owner, customer_context):
    source(tenant, owner, title="Crypto payments (draft)", body="We accept cryptocurrency payments.", status="draft")
    stale = source(tenant, owner, title="Crypto payments", body="We accept cryptocurrency.", visibility="public")
    _make_overdue(stale)
    source(tenant, owner, title="Crypto internal", body="Cryptocurrency payments are manual.", visibility="internal")
    source(tenant, owner, title="Crypto EU", body="Cryptocurrency is accepted.", visibility="public", regions=["eu"])
    result = ask(customer_context, "Do you accept cryptocurrency?")
    assert result.status == RetrievalStatus.GAP
    assert result.withheld == {"draft": 1, "stale": 1, "visibility": 1, "scope": 1}
    assert KnowledgeGap.objects.get().withheld == result.withheld


def test_evaluation_runs_can_leave_the_gap_report_alone(tenant, customer_context):
    result = knowledge.retrieve("cryptocurrency", customer_context, record_gap=False)
    assert result.is_gap and not KnowledgeGap.objects.exists()


def test_question_without_searchable_words_is_not_a_gap(tenant, owner, customer_context):
    source(tenant, owner, title="Blender returns", body=BODY, visibility=Visibility.PUBLIC)
    result = ask(customer_context, "?? !!")
    assert result.status == RetrievalStatus.WEAK and result.terms == []
    assert not KnowledgeGap.objects.exists()


def test_results_are_ranked_and_limited(tenant, owner, customer_context):
    source(tenant, owner, title="Blender returns", body=BODY, visibility=Visibility.PUBLIC)
    source(tenant, owner, title="Toaster warranty", body="Toasters carry a two year warranty.", visibility="public")
    source(tenant, owner, title="Returns overview", body="Most items can be returned.", visibility="public")
    result = ask(customer_context, k=2)
    assert len(result.passages) == 2
    assert result.passages[0].source_title == "Blender returns"
    assert result.passages[0].score >= result.passages[1].score


def test_bad_arguments_are_refused(tenant):
    with pytest.raises(ValueError, match="audience"):
        RetrievalContext(tenant_id=tenant.pk, audience="everyone")
    with pytest.raises(ValueError, match="k must be"):
        knowledge.retrieve("refund", RetrievalContext(tenant_id=tenant.pk), k=0)


def test_search_backend_follows_the_database(settings):
    settings.KNOWLEDGE_SEARCH_BACKEND = "auto"
    assert search_backend() == ("postgres" if connection.vendor == "postgresql" else "lexical")
    settings.KNOWLEDGE_SEARCH_BACKEND = "lexical"
    assert search_backend() == "lexical"
    settings.KNOWLEDGE_SEARCH_BACKEND = "elasticsearch"
    with pytest.raises(ImproperlyConfigured, match="KNOWLEDGE_SEARCH_BACKEND='elasticsearch'"):
        search_backend()
    if connection.vendor != "postgresql":
        settings.KNOWLEDGE_SEARCH_BACKEND = "postgres"
        with pytest.raises(ImproperlyConfigured, match="on PostgreSQL only"):
            search_backend()


def test_lexical_ranking_applies_the_same_rules_on_any_database(tenant, owner, customer_context, settings):
    """On PostgreSQL, forcing the portable ranking must change the order at most, never
    which sources are eligible."""
    source(tenant, owner, title="Blender returns", body=BODY, visibility=Visibility.PUBLIC)
    source(tenant, owner, title="Internal", body=BODY, visibility=Visibility.INTERNAL)
    source(tenant, owner, title="EU", body=BODY, visibility=Visibility.PUBLIC, regions=["eu"])
    default = titles(ask(customer_context))
    settings.KNOWLEDGE_SEARCH_BACKEND = "lexical"
    assert titles(ask(customer_context)) == default == ["Blender returns"]
