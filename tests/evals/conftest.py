"""Fixtures for evaluation: a suite acting as the support agent, a knowledge owner's
sources, and ``run`` to execute a suite the way the embedded default does."""

import pytest

from apps.evals import services
from apps.evals.choices import RunTrigger
from apps.evals.models import EvalRun
from tests.knowledge.factories import source
from tests.runtime.conftest import model_server, provider, talk  # noqa: F401 — fixtures for the tests here
from tests.tools.conftest import executions, fresh_cache, register_builtin  # noqa: F401 — fixtures


@pytest.fixture(autouse=True)
def _empty_counters(fresh_cache):  # noqa: F811 — guardrail and gateway counters live in the cache
    """Each test starts with no counters."""


@pytest.fixture
def owner(people):
    return people["agent_owner"]


@pytest.fixture
def suite(tenant, agent, owner, people):
    return services.create_suite(
        by=owner, tenant=tenant, name="Support regression", agent=agent, run_as=people["support_agent"]
    )


@pytest.fixture
def returns_source(tenant, people):
    return source(
        tenant,
        people["knowledge_owner"],
        title="Returns policy",
        body="Returns are accepted within 30 days of delivery with the receipt. Refunds reach the card in 5 days.",
        visibility="public",
    )


def case(suite, owner, **fields):
    values = {"name": fields.get("input", "case")[:60], "category": "grounding", "channel": "web_chat", **fields}
    return services.create_case(by=owner, suite=suite, **values)


@pytest.fixture
def run(django_capture_on_commit_callbacks, owner):
    """``run(suite, agent=None)``: start a run and execute it as the embedded default does."""

    def execute(suite, agent=None, by=None) -> EvalRun:
        with django_capture_on_commit_callbacks(execute=True):
            started = services.start_run(
                suite=suite, agent=agent or suite.agent, by=by or owner, trigger=RunTrigger.PAGE
            )
        return EvalRun.objects.get(pk=started.pk)

    return execute
