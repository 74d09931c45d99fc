"""/health/: 200 when the database, cache and broker answer; 503 naming what does not."""

import pytest
from asgiref.local import Local
from django.conf import settings as django_settings
from django.core.cache import caches
from django.db import connection

pytestmark = pytest.mark.django_db


def configured_cache_backend() -> str:
    return django_settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]


def test_health_is_ok_with_the_configured_services(client):
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "broker"}
    for name, check in body["checks"].items():
        assert check["ok"] is True, name
        assert check["ms"] >= 0
    assert body["checks"]["database"]["detail"] == connection.vendor
    assert body["checks"]["cache"]["detail"] == configured_cache_backend()
    if django_settings.CELERY_TASK_ALWAYS_EAGER:
        assert "eager" in body["checks"]["broker"]["detail"]
    else:
        assert body["checks"]["broker"]["detail"].startswith("connected")


def test_health_is_never_cached_and_needs_no_login(client):
    response = client.get("/health/")
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


def test_health_answers_only_get(client):
    assert client.post("/health/").status_code == 405


def test_health_is_503_when_the_cache_is_down(client, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            # Port 1: nothing listens there, so every cache call fails at once.
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    # Changing CACHES resets the handler (Django's setting_changed receiver); make sure no
    # connection to the old backend survives on this thread either.
    caches._connections = Local()
    assert type(caches["default"]).__name__ == "RedisCache"

    response = client.get("/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["cache"]["ok"] is False
    assert "error" in body["checks"]["cache"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True


def test_health_is_ok_again_once_the_cache_is_back(client):
    # After the broken-cache test, the configured cache is back in place.
    assert type(caches["default"]).__name__ == configured_cache_backend()
    assert client.get("/health/").status_code == 200
