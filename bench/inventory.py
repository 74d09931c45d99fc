"""Benchmark: the inventory's hot paths as the inventory grows.

- may_start_turn(agent_id): asked at the start of every turn. Compared in the same run with
  the bare minimum (one primary-key read of the agent's status), as a ratio.
- GET /api/v1/agents/ (first page of 50) and the admin agent list: latency and query count
  with 100 and with 5,000 agents; the query count must not grow with the rows.

Runs on a throwaway test database: SQLite by default, PostgreSQL with
DATABASE_URL=postgres://postgres@127.0.0.1:5432/controlplane python bench/inventory.py
"""

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
# Measure as production runs: DEBUG off (with DEBUG on, Django logs every query, which both
# slows the paths measured and caps the query log that counts them).
os.environ["DEBUG"] = "false"
os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-not-used-anywhere-else-0123456789")
os.environ.setdefault("AUDIT_SIGNING_KEY", "benchmark-only-audit-signing-key")
os.environ["ALLOWED_HOSTS"] = "testserver"
os.environ["SECURE_SSL_REDIRECT"] = "false"

import django

django.setup()

from django.conf import settings  # noqa: E402

# No collectstatic in a benchmark run: serve static names unhashed.
settings.STORAGES = {
    **settings.STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

CALLS = 2_000
PAGE_REQUESTS = 50


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def timed(function, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def populate(agent_count: int, tenants, owners) -> list[int]:
    from apps.agents.models import Agent

    existing = Agent.objects.count()
    Agent.objects.bulk_create(
        [
            Agent(
                tenant=tenants[index % len(tenants)],
                owner=owners[index % len(tenants)],
                name=f"Agent {index}",
                slug=f"agent-{index}",
                purpose="Benchmark agent",
                channels=["web_chat"],
            )
            for index in range(existing, agent_count)
        ],
        batch_size=1000,
    )
    return list(Agent.objects.values_list("pk", flat=True))


def main() -> None:
    from apps.accounts.models import Membership, Role, User
    from apps.accounts.services import create_tenant, sync_user_access
    from apps.agents.models import Agent
    from apps.agents.services import may_start_turn

    setup_test_environment()
    database_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        print(f"database: {connection.vendor} ({database_name})")
        tenants = [create_tenant(name=f"Bench tenant {n}", slug=f"bench{n}") for n in range(5)]
        owners = []
        for tenant in tenants:
            owner = User.objects.create_user(username=f"owner-{tenant.slug}", password="bench-password")
            Membership.objects.create(user=owner, role=Role.objects.get(tenant=tenant, kind="agent_owner"))
            sync_user_access(user=owner)
            owners.append(owner)
        viewer = owners[0]
        client = Client()
        client.force_login(viewer)

        for agent_count in (100, 5_000):
            agent_ids = populate(agent_count, tenants, owners)
            probe = agent_ids[len(agent_ids) // 2]

            governed = timed(lambda probe=probe: may_start_turn(probe), CALLS)
            baseline = timed(
                lambda probe=probe: Agent.objects.filter(pk=probe).values_list("status", flat=True).first(), CALLS
            )
            print(f"\n{agent_count} agents in 5 tenants")
            for label, samples in (("may_start_turn", governed), ("bare status read", baseline)):
                print(f"  {label:<19} p50 {statistics.median(samples):.3f} ms  p95 {percentile(samples, 0.95):.3f} ms")
            print(f"  ratio (p50)         {statistics.median(governed) / statistics.median(baseline):.2f}x")
            for label, url in (("API list (50/page)", "/api/v1/agents/"), ("admin list", "/admin/agents/agent/")):
                queries: list[str] = []

                def count(execute, sql, params, many, context, queries=queries):
                    queries.append(sql)
                    return execute(sql, params, many, context)

                with connection.execute_wrapper(count):
                    response = client.get(url)
                assert response.status_code == 200, (url, response.status_code)
                samples = timed(lambda url=url: client.get(url), PAGE_REQUESTS)
                print(
                    f"  {label:<19} p50 {statistics.median(samples):.1f} ms  p95 {percentile(samples, 0.95):.1f} ms"
                    f"  queries {len(queries)}"
                )
    finally:
        connection.creation.destroy_test_db(database_name, verbosity=0)


if __name__ == "__main__":
    main()
