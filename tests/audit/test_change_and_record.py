"""``audit.change_and_record``: a row's change and the event that describes it are kept
together or not at all; one statement on PostgreSQL outside a transaction, a transaction
elsewhere. Both paths run here: inside the test's transaction (``db``) and outside one
(``transactional_db``)."""

import json

import pytest
from django.db import IntegrityError

from apps import audit
from apps.accounts.models import Tenant
from apps.audit.chain import verify_chain
from apps.audit.models import AuditEvent, PendingEvent
from tests.accounts.factories import TenantFactory

TABLE = Tenant._meta.db_table
RENAME = f"UPDATE {TABLE} SET name = %s WHERE id = %s RETURNING id"  # noqa: S608


# Both ways change_and_record runs: inside a caller's transaction, and on its own.
pytestmark = pytest.mark.parametrize(
    "database",
    [
        pytest.param("in_transaction", marks=pytest.mark.django_db),
        pytest.param("autocommit", marks=pytest.mark.django_db(transaction=True)),
    ],
)


def events(event_type="tenant.renamed_for_test") -> list[dict]:
    chained = [event.data for event in AuditEvent.objects.filter(event_type=event_type)]
    pending = [json.loads(body) for body in PendingEvent.objects.values_list("body", flat=True)]
    pending = [event for event in pending if event["event_type"] == event_type]
    return chained + pending


def test_the_change_and_its_event_are_kept_together(database):
    tenant = TenantFactory(name="Before")

    changed = audit.change_and_record(
        RENAME, ["After", tenant.pk], "tenant.renamed_for_test", tenant=tenant.pk, payload={"to": "After"}
    )

    assert changed is True
    tenant.refresh_from_db()
    assert tenant.name == "After"
    [event] = events()
    assert event["payload"] == {"to": "After"} and event["tenant_id"] == tenant.pk
    if database == "autocommit":  # appended to the chain at once, and the chain holds
        assert PendingEvent.objects.count() == 0
        assert verify_chain().ok


def test_no_row_changed_means_no_event(database):
    changed = audit.change_and_record(RENAME, ["Nobody", 987_654], "tenant.renamed_for_test", tenant=987_654)

    assert changed is False
    assert events() == []


def test_a_failing_change_records_nothing(database):
    taken = TenantFactory(slug="taken")
    other = TenantFactory(slug="other")
    clash = f"UPDATE {TABLE} SET slug = %s WHERE id = %s RETURNING id"  # noqa: S608

    with pytest.raises(IntegrityError):
        audit.change_and_record(clash, [taken.slug, other.pk], "tenant.renamed_for_test", tenant=other.pk)

    other.refresh_from_db()
    assert other.slug == "other"
    assert events() == []


def test_a_bad_event_stops_the_change_before_it_runs(database):
    tenant = TenantFactory(name="Kept")

    with pytest.raises(ValueError, match="dotted lower-case"):
        audit.change_and_record(RENAME, ["Lost", tenant.pk], "Not An Event Type", tenant=tenant.pk)

    tenant.refresh_from_db()
    assert tenant.name == "Kept"
