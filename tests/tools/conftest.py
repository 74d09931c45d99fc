"""Fixtures for the gateway tests: a counting built-in (to see whether a call really ran),
a clean cache (rate and daily-limit counters live there) and a frozen clock (so a minute
counter cannot roll over in the middle of a test)."""

import threading
from datetime import UTC, datetime

import pytest
from django.core.cache import cache
from django.utils import timezone

from apps.tools import connectors
from apps.tools.choices import ConnectorKind, RiskTier
from apps.tools.models import Tool

COUNTING = "tests.counting"
# What the counting built-in itself requires: nothing (each tool's own schema decides).
COUNTING_SCHEMA = {"type": "object"}
NOTE_SCHEMA = {
    "type": "object",
    "properties": {
        "note": {"type": "string", "maxLength": 500},
        "amount": {"type": "number", "minimum": 0},
        "customer_email": {"type": "string", "maxLength": 5},
        "tenant": {"type": ["string", "integer"]},
        "tenant_id": {"type": ["string", "integer"]},
        "filter": {"type": "object"},
    },
    "additionalProperties": False,
}


class Executions(list):
    """The invocations the counting built-in ran, in order (appended under a lock: the
    concurrency tests run it from several threads)."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()

    def run(self, invocation: connectors.Invocation) -> dict:
        with self.lock:
            self.append(invocation)
            return {"ran": len(self)}


@pytest.fixture
def register_builtin(monkeypatch):
    """``register_builtin(name, function, schema)`` for this test only: the registry is a
    copy, put back afterwards, so no test leaves a built-in behind."""
    monkeypatch.setattr(connectors, "_builtins", dict(connectors._builtins))
    return connectors.register_builtin


@pytest.fixture
def executions(register_builtin) -> Executions:
    """Registers the counting built-in; each run of a tool using it lands in the list."""
    ran = Executions()
    register_builtin(COUNTING, ran.run, COUNTING_SCHEMA)
    return ran


def counting_tool(tenant, name="orders.touch", **fields) -> Tool:
    """A tool run by the counting built-in (needs the ``executions`` fixture first)."""
    tool = Tool(
        tenant=tenant,
        name=name,
        description=fields.pop("description", f"{name} for tests"),
        connector=ConnectorKind.BUILTIN,
        builtin=fields.pop("builtin", COUNTING),
        argument_schema=fields.pop("argument_schema", NOTE_SCHEMA),
        risk_tier=fields.pop("risk_tier", RiskTier.LOW),
        **fields,
    )
    tool.full_clean()
    tool.save()
    return tool


@pytest.fixture
def fresh_cache():
    """Rate and daily-limit counters are keyed by primary keys, which SQLite hands out
    again after a rolled-back test: every test starts (and ends) with an empty cache."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def frozen_now(monkeypatch):
    """Stop the clock in the middle of a minute, so per-minute counters cannot roll over."""
    moment = datetime.now(UTC).replace(second=30, microsecond=0)
    monkeypatch.setattr(timezone, "now", lambda: moment)
    return moment
