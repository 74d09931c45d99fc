"""The settings module fails loudly on unsafe production configuration, and a
production-like configuration passes Django's deployment checks."""

import os
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent

PRODUCTION_LIKE = {
    "DEBUG": "false",
    "SECRET_KEY": "a-long-random-production-secret-key-0123456789-abcdefghijklmnop",
    "ALLOWED_HOSTS": "controlplane.example.com",
    "AUDIT_SIGNING_KEY": "a-separate-audit-signing-key-0123456789",
    "CONNECTION_SECRET_KEYS": "uAZ1Fe9nUf0nUS6PNbm5ZDpjAy7OeWRZq7VYwEfsQ5M=",
    "DATABASE_URL": "sqlite:////tmp/controlplane-check-deploy.sqlite3",
}


def _manage(*arguments: str, environment: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {
            "DEBUG",
            "SECRET_KEY",
            "AUDIT_SIGNING_KEY",
            "CONNECTION_SECRET_KEYS",
            "REDIS_URL",
            "DJANGO_ALLOW_ASYNC_UNSAFE",
        }
    }
    return subprocess.run(  # noqa: S603 — fixed argument list, no shell
        [sys.executable, "manage.py", *arguments],
        cwd=REPOSITORY,
        env={**clean, **environment},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_production_settings():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", environment=PRODUCTION_LIKE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_missing_secret_key_with_debug_off_is_refused():
    environment = {key: value for key, value in PRODUCTION_LIKE.items() if key != "SECRET_KEY"}
    result = _manage("check", environment={**environment, "SECRET_KEY": ""})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_missing_audit_signing_key_with_debug_off_is_refused():
    result = _manage("check", environment={**PRODUCTION_LIKE, "AUDIT_SIGNING_KEY": ""})
    assert result.returncode != 0
    assert "AUDIT_SIGNING_KEY must be set" in result.stderr


def test_missing_connection_secret_keys_with_debug_off_is_refused():
    result = _manage("check", environment={**PRODUCTION_LIKE, "CONNECTION_SECRET_KEYS": ""})
    assert result.returncode != 0
    assert "CONNECTION_SECRET_KEYS must be set" in result.stderr


def test_a_connection_secret_key_that_is_not_a_fernet_key_is_refused():
    result = _manage("check", environment={**PRODUCTION_LIKE, "CONNECTION_SECRET_KEYS": "not-a-fernet-key"})
    assert result.returncode != 0
    assert "must be a Fernet key" in result.stderr


def test_bad_boolean_fails_loudly():
    result = _manage("check", environment={**PRODUCTION_LIKE, "DEBUG": "flase"})
    assert result.returncode != 0
    assert "DEBUG='flase' is not a boolean" in result.stderr
