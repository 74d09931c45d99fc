"""A real Celery worker for the services suite (make test-services).

The worker is a separate process pointed at the test database and the same Redis broker,
so tasks run exactly as in production: serialized, on another process, seeing only
committed rows (tests that use it need ``django_db(transaction=True)``).
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

REPOSITORY = Path(__file__).resolve().parent.parent


def _test_database_url() -> str:
    database = connection.settings_dict
    if database["ENGINE"] != "django.db.backends.postgresql":
        raise RuntimeError("The Celery worker fixture needs PostgreSQL (DATABASE_URL).")
    credentials = quote(database["USER"] or "")
    if database.get("PASSWORD"):
        credentials += ":" + quote(database["PASSWORD"])
    host = database.get("HOST") or "127.0.0.1"
    port = database.get("PORT") or "5432"
    return f"postgres://{credentials}@{host}:{port}/{database['NAME']}"


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker):
    """Start one worker process for the session; yield the Celery app it consumes for."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        pytest.skip("needs REDIS_URL: run with make test-services")
    from controlplane.celery import app

    with django_db_blocker.unblock():
        database_url = _test_database_url()
    app.control.purge()
    # A short turn lease, so a turn whose worker process is killed is taken over within
    # seconds (tests/runtime/test_worker_turns.py kills one mid-turn).
    environment = {**os.environ, "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1", "TURN_LEASE_SECONDS": "3"}
    log_path = REPOSITORY / "var" / "celery-test-worker.log"
    log_path.parent.mkdir(exist_ok=True)
    with open(log_path, "w") as log:
        worker = subprocess.Popen(  # noqa: S603 — fixed argument list, no shell
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "controlplane",
                "worker",
                "--pool=prefork",
                "--concurrency=2",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                f"--hostname=test-worker-{os.getpid()}@%h",
            ],
            cwd=REPOSITORY,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Celery worker did not start; see {log_path}:\n{log_path.read_text()[-3000:]}")
        yield app
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
