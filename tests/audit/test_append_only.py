"""The audit trail is append-only: the model and its queryset refuse every change on both
databases, and on PostgreSQL the database itself refuses UPDATE, DELETE and TRUNCATE from
any client."""

import pytest
from django.core.exceptions import PermissionDenied
from django.db import Error, connection, transaction

from apps import audit
from apps.audit.chain import verify_chain
from apps.audit.models import AppendOnlyError, AuditEvent

from .helpers import chained

pytestmark = pytest.mark.django_db

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the append-only trigger exists on PostgreSQL only; on SQLite the model alone refuses changes",
)

TABLE = AuditEvent._meta.db_table


@pytest.fixture
def events():
    for number in range(3):
        audit.record("tool.executed", tool=f"tool_{number}", outcome="ok")
    return list(chained())


def snapshot():
    return list(AuditEvent.objects.order_by("seq").values_list("seq", "prev_hash", "row_hash", "body"))


def test_append_only_error_is_a_permission_error():
    assert issubclass(AppendOnlyError, PermissionDenied)


def test_saving_an_event_is_refused(events):
    before = snapshot()
    event = AuditEvent.objects.get(seq=2)
    event.body = event.body.replace('"ok"', '"denied"')
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.save(update_fields=["body"])
    assert snapshot() == before


def test_creating_an_event_outside_record_is_refused(events):
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.create(seq=99, prev_hash="a" * 64, row_hash="b" * 64, body="{}")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.get_or_create(seq=99, defaults={"prev_hash": "a" * 64, "row_hash": "b" * 64, "body": "{}"})
    assert AuditEvent.objects.count() == 3


def test_deleting_an_event_is_refused(events):
    before = snapshot()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.get(seq=2).delete()
    assert snapshot() == before


def test_queryset_update_and_delete_are_refused(events):
    before = snapshot()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(seq=2).update(body="{}")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(seq__gte=1).delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_update(list(AuditEvent.objects.all()), ["body"])
    assert snapshot() == before
    assert verify_chain().ok


@postgresql_only
def test_raw_sql_update_is_refused_by_the_database(events):
    before = snapshot()
    with (
        pytest.raises(Error, match="append-only: UPDATE refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"UPDATE {TABLE} SET body = body WHERE seq = 2")  # noqa: S608
    assert snapshot() == before


@postgresql_only
def test_raw_sql_delete_is_refused_by_the_database(events):
    before = snapshot()
    with (
        pytest.raises(Error, match="append-only: DELETE refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"DELETE FROM {TABLE}")  # noqa: S608
    assert snapshot() == before


@postgresql_only
def test_truncate_is_refused_by_the_database(events):
    """The test database runs with the truncate trigger off (transactional tests end with a
    TRUNCATE, see tests/conftest.py); switched back on here, inside a savepoint."""
    before = snapshot()
    with (
        pytest.raises(Error, match="append-only: TRUNCATE refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER audit_no_truncate")
        cursor.execute(f"TRUNCATE {TABLE}")
    assert snapshot() == before


@postgresql_only
def test_the_triggers_are_installed_and_enabled():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
            [TABLE],
        )
        triggers = dict(cursor.fetchall())
    # "D": the truncate trigger is disabled in the test database only (tests/conftest.py).
    assert triggers == {"audit_no_update_delete": "O", "audit_no_truncate": "D"}
