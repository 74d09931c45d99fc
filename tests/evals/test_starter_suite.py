"""The starter suites the demo ships with: at least four cases in every category, each
naming the demo's own sources and tools, every case passing on the demo with the offline
model, and a second seed adding nothing.

``seed_demo`` runs every starter case, so the module seeds once (rolled back at its end)
and each test reads that seed inside its own rolled-back savepoint."""

import io
from collections import Counter

import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings

from apps.evals.choices import Category, ResultStatus, RunStatus, RunTrigger
from apps.evals.demo import SUITES
from apps.evals.models import EvalCase, EvalRun, EvalSuite
from apps.knowledge.models import KnowledgeSource

pytestmark = pytest.mark.django_db

SUPPORT_SUITE = "Acme support starter suite"


@pytest.fixture(scope="module")
def seed_output(django_db_setup, django_db_blocker, tmp_path_factory):
    settings = {
        "DEBUG": True,  # seed_demo refuses to run without it
        "PASSWORD_HASHERS": ["django.contrib.auth.hashers.MD5PasswordHasher"],
        "AUDIT_CHECKPOINT_DIR": tmp_path_factory.mktemp("audit-checkpoints"),
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
    }
    with django_db_blocker.unblock(), override_settings(**settings), transaction.atomic():
        output = io.StringIO()
        call_command("seed_demo", stdout=output)
        yield output.getvalue()
        transaction.set_rollback(True)


def _suite(name: str) -> EvalSuite:
    return EvalSuite.objects.select_related("agent", "run_as").get(tenant__slug="acme", name=name)


def test_the_support_starter_suite_covers_every_category(seed_output):
    suite = _suite(SUPPORT_SUITE)
    assert suite.agent.slug == "support-assistant"
    assert suite.run_as.username == "agent.smith"
    cases = list(suite.cases.filter(is_active=True))
    assert len(cases) >= 40
    per_category = Counter(case.category for case in cases)
    assert set(per_category) == set(Category.values)
    assert min(per_category.values()) >= 4, per_category
    assert all(case.has_expectation for case in cases)
    # Cited or forbidden sources are the demo tenant's own, including what must never answer.
    named = {source for case in cases for source in (*case.must_cite, *case.must_not_cite)}
    titles = dict(KnowledgeSource.objects.filter(pk__in=named, tenant=suite.tenant).values_list("pk", "title"))
    assert set(titles) == named
    assert {"Returns and refunds (2025)", "Shipping times", "Gift cards", "Holiday promotion 2024"} <= set(
        titles.values()
    )


def test_every_starter_case_passes_on_the_demo(seed_output):
    for spec in SUITES:
        suite = _suite(spec.name)
        run = EvalRun.objects.get(suite=suite, agent=suite.agent)
        assert (run.trigger, run.status, run.started_by.username) == (
            RunTrigger.COMMAND,
            RunStatus.COMPLETED,
            "olivia.owner",
        )
        assert run.case_count == suite.cases.filter(is_active=True).count() == len(spec.cases)
        failures = [
            f"{result.case_name} ({result.category}): {result.status} {result.decision}/{result.decision_reason}: "
            f"{'; '.join(result.failures)}"
            for result in run.results.exclude(status=ResultStatus.PASSED)
        ]
        assert not failures, "\n".join(failures)
        assert f"run #{run.pk}: {run.case_count} of {run.case_count} passed" in seed_output


def test_seeding_again_adds_nothing(seed_output):
    before = (EvalSuite.objects.count(), EvalCase.objects.count(), EvalRun.objects.count())
    output = io.StringIO()
    call_command("seed_demo", stdout=output)
    assert (EvalSuite.objects.count(), EvalCase.objects.count(), EvalRun.objects.count()) == before
    assert f"“{SUPPORT_SUITE}” for Acme Support Assistant, 0 new case(s); already run." in output.getvalue()
