"""What the PostgreSQL + Redis benchmarks share: pointing Django at their own throwaway
database and Redis database before it starts, making and dropping that database, naming the
services measured on, and percentiles. Not a benchmark itself (make bench skips ``_*.py``)."""

import atexit
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def configure(name: str, *, redis_variable: str, redis_url: str) -> None:
    """Set the environment for ``django.setup()``: PostgreSQL database ``bench_<name>`` on the
    server DATABASE_URL names (default the local one), Redis at ``redis_url`` unless
    ``redis_variable`` names another (never the environment's REDIS_URL: it is flushed),
    production settings, and keys and an audit checkpoint directory for this run only."""
    sys.path.insert(0, str(REPOSITORY))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/bench_{name}"
    os.environ["REDIS_URL"] = os.environ.get(redis_variable, redis_url)
    os.environ["CACHE_KEY_PREFIX"] = f"bench-{name}"
    # Measure as production runs: DEBUG off (with DEBUG on, Django logs every query).
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-not-used-anywhere-else-0123456789")
    os.environ.setdefault("AUDIT_SIGNING_KEY", "benchmark-only-audit-signing-key")
    # A Fernet key (32 bytes, URL-safe base64) for benchmark runs only: their tools have no secret.
    os.environ.setdefault("CONNECTION_SECRET_KEYS", "Z2F0ZXdheS1iZW5jaG1hcmstb25seS1mZXJuZXRrZXk=")
    checkpoints = tempfile.mkdtemp(prefix=f"{name}-bench-checkpoints-")
    atexit.register(shutil.rmtree, checkpoints, ignore_errors=True)
    os.environ["AUDIT_CHECKPOINT_DIR"] = checkpoints


@contextmanager
def throwaway_database(name: str, *, keep: bool):
    """Create the benchmark's own database (never the dev database or the test suite's),
    yield its name, and drop it afterwards unless ``keep``."""
    from django.db import connection, connections

    connection.settings_dict["TEST"]["NAME"] = name
    database_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        yield database_name
    finally:
        connections.close_all()
        if keep:
            print(f"\nkept database {database_name}")
        else:
            connection.creation.destroy_test_db(database_name, verbosity=0)


def services_line(database_name: str) -> str:
    """What the run measures on: PostgreSQL and Redis versions, CPUs and load."""
    from django.core.cache import cache
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0].split(",")[0]
    redis_version = cache._cache.get_client().info("server")["redis_version"]
    return (
        f"database: {version} ({database_name}), Redis {redis_version} ({os.environ['REDIS_URL']}),"
        f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


BENCH_GATE_OVERRIDE = "Benchmark agent: starts in the rollout mode the benchmark measures."


def platform_admin():
    """The platform administrator who sets up benchmark agents: they start in the rollout
    mode a benchmark measures, overriding the rollout gates (recorded like any override)."""
    from apps.accounts.models import User

    admin, _created = User.objects.get_or_create(
        username="bench-platform-admin", defaults={"is_superuser": True, "is_staff": True}
    )
    return admin


def setup_for_pages() -> None:
    """``django.setup()`` for a benchmark that fetches pages with Django's test client (after
    ``configure``): its host over plain HTTP, and static names served unhashed, since a
    benchmark run does not collect static files."""
    import warnings

    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ["SECURE_SSL_REDIRECT"] = "false"
    # WhiteNoise looks for collected static files, which a benchmark run does not make.
    warnings.filterwarnings("ignore", "No directory at", UserWarning)
    import django

    django.setup()
    from django.conf import settings

    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def fetch(client, url: str, headers: dict):
    """GET ``url`` with Django's test client; a page that does not answer 200 stops the run."""
    response = client.get(url, **headers)
    if response.status_code != 200:
        raise SystemExit(f"GET {url} answered {response.status_code}")
    return response


def count_queries(client, url: str, headers: dict) -> tuple[int, list[str]]:
    """The queries of one fetch of ``url``: how many, and each timed with its SQL."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        fetch(client, url, headers)
    return len(captured), [f"{float(query['time']) * 1000:6.1f} ms  {query['sql']}" for query in captured]


def p50_p95(samples: list[float]) -> str:
    """Median and 95th percentile of samples in milliseconds."""
    import statistics

    return f"p50 {statistics.median(samples):6.1f} ms  p95 {percentile(samples, 0.95):6.1f} ms"
