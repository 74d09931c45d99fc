"""Liveness of what a turn needs: the database, the cache and the Celery broker."""

import time
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from controlplane.celery import app as celery_app


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        detail = check()
    except Exception as error:  # a health check reports failures, it never raises them
        return {"ok": False, "error": f"{type(error).__name__}: {error}"[:300]}
    result = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
    if detail:
        result["detail"] = detail
    return result


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _check_cache() -> str:
    key = f"health:{uuid.uuid4().hex}"
    cache.set(key, "1", timeout=10)
    if cache.get(key) != "1":
        raise RuntimeError("value written to the cache could not be read back")
    cache.delete(key)
    return settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]


def _check_broker() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "eager: tasks run in-process (no broker configured)"
    with celery_app.connection_for_write() as broker:
        broker.ensure_connection(max_retries=1, timeout=settings.HEALTH_CHECK_TIMEOUT)
    return f"connected ({broker.transport_cls})"


def _check_workers() -> str:
    """Round-trip a task through the broker to a worker and back (only when asked: it
    takes a worker's attention, so load balancers should not poll it)."""
    from .tasks import health_probe

    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "eager: tasks run in-process, no worker needed"
    hostname = health_probe.apply_async(expires=settings.HEALTH_CHECK_TIMEOUT * 2).get(
        timeout=settings.HEALTH_CHECK_TIMEOUT
    )
    return f"answered by {hostname}"


@never_cache
@require_GET
def health(request):
    """200 when everything a turn needs answers, 503 otherwise. ``?workers=1`` also checks
    that a Celery worker is consuming tasks."""
    checks = {"database": _timed(_check_database), "cache": _timed(_check_cache), "broker": _timed(_check_broker)}
    if request.GET.get("workers"):
        checks["workers"] = _timed(_check_workers)
    healthy = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ok" if healthy else "degraded", "checks": checks}, status=200 if healthy else 503)
