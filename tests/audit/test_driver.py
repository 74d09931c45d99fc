"""The driver cursor of the hot paths (apps/audit/driver.py): statements sent with
``prepare=True`` are prepared once per connection, unless PREPARED_STATEMENTS is off."""

import pytest
from django.db import connection

from apps import audit
from apps.accounts.models import Tenant
from tests.accounts.factories import TenantFactory

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's"),
    pytest.mark.django_db(transaction=True),
]

RENAME = f"UPDATE {Tenant._meta.db_table} SET name = %s WHERE id = %s RETURNING id"  # noqa: S608


def prepared_renames() -> list:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s", ["%SET name = $1%"])
        return cursor.fetchall()


def rename_three_times() -> None:
    tenant = TenantFactory(name="Before")
    for name in ("One", "Two", "Three"):
        assert audit.change_and_record(RENAME, [name, tenant.pk], "tenant.renamed_for_test", tenant=tenant.pk)


def test_the_hot_path_statements_are_prepared_once_per_connection():
    connection.close()  # a fresh session: nothing prepared yet

    rename_three_times()

    assert len(prepared_renames()) == 1


def test_prepared_statements_can_be_turned_off(settings):
    settings.PREPARED_STATEMENTS = False
    connection.close()

    rename_three_times()

    assert prepared_renames() == []
