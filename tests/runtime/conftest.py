"""Fixtures for turns: a scripted model server on loopback, a provider pointing at it, an
agent that uses it, a conversation, and ``talk`` to send a message and run the turn the
way the embedded default does (eagerly, once the submitting transaction commits)."""

from decimal import Decimal

import pytest

from apps.agents.choices import RolloutMode
from apps.agents.models import ModelProvider
from apps.runtime import services
from apps.runtime.models import Turn
from tests.model_server import ScriptedModelServer
from tests.tools.conftest import executions, fresh_cache, register_builtin  # noqa: F401 — fixtures

API_KEY = "sk-test-runtime-key-0123456789"


@pytest.fixture
def model_server():
    """A fresh scripted model server per test, so no test inherits another's script or recorded requests."""
    with ScriptedModelServer() as server:
        yield server


def scripted_provider(tenant, server, **fields) -> ModelProvider:
    """A provider pointing at the scripted model server: two models, round prices, no retries."""
    values = {
        "name": "Scripted",
        "base_url": server.base_url,
        "model_names": ["small-model", "large-model"],
        "input_price_per_million": Decimal("2.00"),
        "output_price_per_million": Decimal("8.00"),
        "timeout_seconds": 5,
        "max_retries": 0,
        **fields,
    }
    return ModelProvider.objects.create(tenant=tenant, **values)


@pytest.fixture
def provider(tenant, model_server, monkeypatch):
    monkeypatch.setenv("TEST_MODEL_API_KEY", API_KEY)
    return scripted_provider(tenant, model_server, api_key_env_var="TEST_MODEL_API_KEY")


@pytest.fixture
def chat_agent(agent, provider):
    """The tenant's agent, on the scripted provider's large model, in assist mode."""
    agent.model_provider = provider
    agent.model_name = "large-model"
    agent.rollout_mode = RolloutMode.ASSIST
    agent.channels = ["web_chat", "api"]
    agent.save()
    return agent


@pytest.fixture
def actor(people):
    return people["support_agent"]


@pytest.fixture
def conversation(chat_agent, actor):
    return services.open_conversation(
        actor=actor, agent=chat_agent, channel="web_chat", subject="C-1001", subject_verified=True, region="us"
    )


@pytest.fixture
def talk(django_capture_on_commit_callbacks):
    """``talk(conversation, text)``: submit a turn, let it run as the embedded default
    runs it (after the commit), and return it fresh from the database."""

    def send(conversation, text, **fields) -> Turn:
        with django_capture_on_commit_callbacks(execute=True):
            turn = services.submit_turn(conversation=conversation, actor=conversation.actor, text=text, **fields)
        return Turn.objects.get(pk=turn.pk)

    return send


@pytest.fixture(autouse=True)
def _empty_counters(fresh_cache):  # noqa: F811 — the imported fixture, used by every turn test
    """Guardrail and gateway counters live in the cache: each test starts with none."""
