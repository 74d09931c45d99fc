import pytest

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_health_reports_a_real_worker_consuming_the_queue(client, celery_worker):
    response = client.get("/health/?workers=1")
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"]["database"]["detail"] == "postgresql"
    assert body["checks"]["cache"]["detail"] == "RedisCache"
    assert body["checks"]["workers"]["ok"] is True
    assert body["checks"]["workers"]["detail"].startswith("answered by ")


def test_health_probe_runs_in_the_worker_process_not_inline(celery_worker):
    import os

    from apps.runtime.tasks import health_probe

    answer = health_probe.apply_async().get(timeout=10)
    # Run eagerly, the probe would answer with this test process's own pid.
    assert answer.rsplit(" ", 1)[-1] != str(os.getpid())
