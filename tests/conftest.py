import pytest
from django.conf import settings as django_settings
from django.db import connection
from rest_framework.test import APIClient

from apps.accounts.choices import RoleKind
from controlplane.celery import app as celery_app

from .accounts.factories import TenantFactory, UserFactory, member
from .agents.factories import AgentFactory
from .celery_worker import celery_worker  # noqa: F401 — a fixture, used by the services suite


def pytest_collection_modifyitems(config, items):
    """Tests marked ``services`` need PostgreSQL, Redis and a worker: skip them on the
    embedded default, where make test runs."""
    if django_settings.REDIS_URL:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL + Redis + a Celery worker: run make test-services")
    for item in items:
        if "services" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Transactional tests end by TRUNCATE-ing every table, which the audit table's
    append-only trigger refuses on PostgreSQL. In the test database only, that one
    trigger is off; tests/audit/test_append_only.py switches it back on to prove it."""
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_no_truncate")


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _audit_checkpoints_per_test(settings, tmp_path):
    """Each test's chain starts empty, so its signed checkpoints must too."""
    settings.AUDIT_CHECKPOINT_DIR = tmp_path / "audit-checkpoints"


@pytest.fixture
def tenant(db):
    return TenantFactory(name="Acme Support", slug="acme")


@pytest.fixture
def other_tenant(db):
    return TenantFactory(name="Globex Retail", slug="globex")


@pytest.fixture
def people(tenant):
    """One user per role kind in ``tenant``, keyed by kind, plus "nobody" (no role)."""
    found = {kind.value: member(tenant, kind.value, username=kind.value.replace("_", ".")) for kind in RoleKind}
    found["nobody"] = UserFactory(username="nobody")
    return found


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_superuser=True, is_staff=True)


@pytest.fixture
def agent(tenant, people):
    return AgentFactory(tenant=tenant, owner=people["agent_owner"], name="Support Assistant", slug="support-assistant")


@pytest.fixture
def other_agent(other_tenant):
    return AgentFactory(tenant=other_tenant, name="Globex Helper", slug="globex-helper")


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture(autouse=True)
def _tasks_in_process(request):
    """Outside the tests that use the real worker, tasks run in this process (as in the
    embedded default) also when the suite runs against Redis: a worker could not see rows
    of a test transaction that never commits."""
    if request.node.get_closest_marker("services"):
        yield
        return
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous
