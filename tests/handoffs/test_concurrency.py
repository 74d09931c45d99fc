"""Two people (or two beat schedulers) at the same moment, on PostgreSQL: eight threads,
each with its own connection, released together. One claim wins and the others are told
who has it; an overdue handoff is escalated once however many sweeps run."""

from datetime import timedelta

import pytest
from django.db import connection

from apps.handoffs import services
from apps.handoffs.models import Handoff
from tests.accounts.factories import member
from tests.audit.helpers import chained
from tests.concurrency import all_at_once

from .factories import make_handoff

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 8


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (SQLite serialises writers); run with DATABASE_URL")


def test_one_of_many_simultaneous_claims_wins(tenant, queues):
    handoff = make_handoff(tenant)
    workers = [member(tenant, "support_agent", username=f"worker{number}") for number in range(THREADS)]

    results = all_at_once([lambda by=by: services.claim(handoff_id=handoff.pk, by=by) for by in workers])

    won = [result for result in results if isinstance(result, Handoff)]
    lost = [result for result in results if isinstance(result, services.HandoffStateError)]
    assert (len(won), len(lost)) == (1, THREADS - 1), results
    winner = Handoff.objects.get().claimed_by
    assert winner == won[0].claimed_by
    assert all(f"{winner} claimed this handoff" in " ".join(error.messages) for error in lost)
    assert chained(event_type="handoff.claimed").count() == 1


def test_simultaneous_sweeps_escalate_an_overdue_handoff_once(tenant, queues):
    handoff = make_handoff(tenant)
    moment = handoff.due_at + timedelta(minutes=1)

    results = all_at_once([lambda: services.escalate_overdue(now=moment) for _ in range(THREADS)])

    assert sorted(len(result) for result in results) == [0] * (THREADS - 1) + [1], results
    escalated = Handoff.objects.get()
    assert (escalated.escalation_level, escalated.priority) == (1, "high")
    assert chained(event_type="handoff.escalated").count() == 1
