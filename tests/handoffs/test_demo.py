"""The demo's queues: seeded through the service, idempotent, and routing the demo agent's
escalation topics where the README says."""

import pytest

from apps.accounts.choices import RoleKind
from apps.agents.models import DEFAULT_ESCALATION_TOPICS
from apps.handoffs import services
from apps.handoffs.demo import seed_handoffs
from apps.handoffs.models import HandoffQueue

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(tenant, other_tenant, people):
    seed_handoffs(tenant=tenant, other_tenant=other_tenant, people=people)
    return tenant


def test_the_demo_has_three_queues_with_their_roles(seeded):
    queues = {queue.name: queue for queue in HandoffQueue.objects.filter(tenant=seeded)}

    assert set(queues) == {"Support tier 2", "Billing & refunds", "Legal & compliance"}
    assert queues["Support tier 2"].is_default
    assert {role.kind for role in queues["Legal & compliance"].roles.all()} == {RoleKind.SUPPORT_LEAD}
    assert queues["Billing & refunds"].escalate_to == queues["Support tier 2"]


def test_every_demo_queue_topic_is_one_the_agents_know(seeded):
    for queue in HandoffQueue.objects.filter(tenant=seeded):
        assert set(queue.topics) <= set(DEFAULT_ESCALATION_TOPICS)


@pytest.mark.parametrize(
    ("topic", "queue"),
    [("billing dispute", "Billing & refunds"), ("legal", "Legal & compliance"), ("", "Support tier 2")],
)
def test_the_demo_routes_topics(seeded, topic, queue):
    routed = services.recommend_queue(tenant_id=seeded.pk, reason_code="topic", topic=topic)

    assert routed.name == queue


def test_seeding_twice_changes_nothing(seeded, other_tenant, people):
    rows = {queue.pk: queue.history.count() for queue in HandoffQueue.objects.all()}

    seed_handoffs(tenant=seeded, other_tenant=other_tenant, people=people)

    assert {queue.pk: queue.history.count() for queue in HandoffQueue.objects.all()} == rows
