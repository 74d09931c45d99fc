"""The demo tells the knowledge story: each state an owner must see, and retrieval that
answers a US and an EU customer from their own policies."""

from io import StringIO

import pytest
from django.core.management import call_command

from apps import knowledge
from apps.accounts.models import Tenant
from apps.knowledge.choices import Lifecycle
from apps.knowledge.models import ConflictHint, KnowledgeGap, KnowledgeSource
from apps.knowledge.retrieval import RetrievalContext, RetrievalStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(settings, mailoutbox):
    settings.DEBUG = True
    call_command("seed_demo", stdout=StringIO())
    return Tenant.objects.get(slug="acme")


def test_demo_shows_every_state(seeded):
    statuses = dict(KnowledgeSource.objects.filter(tenant=seeded).values_list("title", "status"))
    assert statuses["Returns and refunds (US)"] == Lifecycle.APPROVED
    assert statuses["Returns and refunds (2025)"] == Lifecycle.DEPRECATED
    assert statuses["Gift cards"] == Lifecycle.DRAFT
    assert statuses["Holiday promotion 2024"] == Lifecycle.DELETED
    assert KnowledgeSource.objects.get(title="Shipping times").stale_since is not None
    assert ConflictHint.objects.open().count() == 1
    assert KnowledgeGap.objects.filter(tenant=seeded).count() == 3
    assert KnowledgeSource.objects.filter(tenant__slug="globex").count() == 1


def test_demo_answers_each_region_from_its_own_policy(seeded):
    question = "My blender arrived damaged, can I get a refund?"
    for region, expected in (("us", "Returns and refunds (US)"), ("eu", "Returns and refunds (EU)")):
        context = RetrievalContext(tenant_id=seeded.pk, region=region, channel="web_chat")
        result = knowledge.retrieve(question, context)
        assert result.status == RetrievalStatus.MATCHED
        assert result.passages[0].source_title == expected
        cited = {passage.source_title for passage in result.passages}
        assert "Returns and refunds (2025)" not in cited  # deprecated
        other = "Returns and refunds (EU)" if region == "us" else "Returns and refunds (US)"
        assert other not in cited


def test_seeding_twice_changes_nothing(seeded, settings):
    before = (KnowledgeSource.objects.count(), ConflictHint.objects.count(), KnowledgeGap.objects.count())
    call_command("seed_demo", stdout=StringIO())
    assert (KnowledgeSource.objects.count(), ConflictHint.objects.count(), KnowledgeGap.objects.count()) == before
