"""The exact bytes the chain hashes, written down once.

A row's hash is ``sha256(prev_hash + "\\n" + str(seq) + "\\n" + body)`` over UTF-8, where
``body`` is the row's canonical JSON exactly as stored in its text column: keys sorted,
no whitespace, ASCII only (non-ASCII escaped), so the same event always has the same bytes
and an auditor can recompute a hash in any language. The body is stored as text, never
re-rendered from jsonb (PostgreSQL's jsonb reorders and reformats JSON).
"""

import hashlib
import json
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

GENESIS_HASH = "0" * 64


def _default(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"{type(value).__name__} cannot be written to the audit trail; pass ids, names and plain values.")


def canonical_json(data) -> str:
    # allow_nan=False: NaN and Infinity are not JSON; the database would refuse the body.
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=_default)


def chain_hash(prev_hash: str, seq: int, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{seq}\n{body}".encode()).hexdigest()
