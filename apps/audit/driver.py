"""Statements straight on the PostgreSQL driver, prepared, for the few hot paths that run
on every call (the audit chain's append, the tool gateway's read and writes): planning
and Django's cursor wrapping were a measurable share of them (bench/audit.py,
bench/gateway.py).

Django leaves psycopg's ``prepare_threshold`` at None, which makes psycopg ignore even an
explicit ``prepare=True``. ``cursor()`` sets a threshold no query reaches by repetition, so
Django's own queries stay unprepared and only statements sent with ``prepare=True`` are
prepared (once per connection). ``PREPARED_STATEMENTS = False`` (a pooler in transaction
mode) leaves the threshold alone: the same statements then run unprepared.
"""

import psycopg
from django.conf import settings
from django.db import connection

NEVER_BY_REPETITION = 2**31 - 1


def cursor() -> psycopg.Cursor:
    """A server-side-binding cursor on the default connection (PostgreSQL only); use it as
    a context manager, inside ``connection.wrap_database_errors`` where errors should reach
    callers as Django's."""
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None and settings.PREPARED_STATEMENTS:
        raw.prepare_threshold = NEVER_BY_REPETITION
    return psycopg.Cursor(raw)
