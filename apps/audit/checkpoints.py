"""Signed checkpoints of the chain head, kept outside the database.

An attacker with database access can edit a row and re-hash every row after it; the chain
alone would still verify. A checkpoint — (seq, head hash, time) signed with
HMAC-SHA256 under ``AUDIT_SIGNING_KEY`` — written somewhere that attacker cannot rewrite
(a directory on other storage, a WORM bucket mounted as one, or a sink of your own) pins
the chain: ``audit_verify`` reports any checkpointed seq whose hash changed.

``AUDIT_CHECKPOINT_SINK`` names the sink class (default: one JSON file per checkpoint in
``AUDIT_CHECKPOINT_DIR``). A sink needs ``write(checkpoint)`` and ``read_all()``.
"""

import hashlib
import hmac
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.utils.module_loading import import_string

from .canonical import canonical_json


def signing_key() -> bytes:
    return settings.AUDIT_SIGNING_KEY.encode()


def key_id(key: bytes | None = None) -> str:
    """A short fingerprint of the key, so a verifier can say "signed with another key"."""
    return hashlib.sha256(key or signing_key()).hexdigest()[:12]


def sign(data: dict, key: bytes | None = None) -> str:
    return hmac.new(key or signing_key(), canonical_json(data).encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    head_hash: str
    created_at: str
    key_id: str
    signature: str

    def signed_fields(self) -> dict:
        return {"seq": self.seq, "head_hash": self.head_hash, "created_at": self.created_at, "key_id": self.key_id}

    def signature_valid(self, key: bytes | None = None) -> bool:
        return hmac.compare_digest(self.signature, sign(self.signed_fields(), key))


class CheckpointError(Exception):
    pass


class DirectorySink:
    """One file per checkpoint, written atomically (temporary file, then rename)."""

    def __init__(self, directory=None):
        self.directory = Path(directory or settings.AUDIT_CHECKPOINT_DIR)

    def write(self, checkpoint: Checkpoint) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"checkpoint-{checkpoint.seq:012d}.json"
        descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=".checkpoint-")
        with os.fdopen(descriptor, "w") as handle:
            json.dump(asdict(checkpoint), handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)

    def read_all(self) -> list[Checkpoint]:
        if not self.directory.exists():
            return []
        found = []
        for path in sorted(self.directory.glob("checkpoint-*.json")):
            try:
                found.append(Checkpoint(**json.loads(path.read_text())))
            except (ValueError, TypeError) as error:
                raise CheckpointError(f"{path} is not a readable checkpoint: {error}") from error
        return found


def sink():
    return import_string(settings.AUDIT_CHECKPOINT_SINK)()


def make_checkpoint(seq: int, head_hash: str) -> Checkpoint:
    fields = {
        "seq": seq,
        "head_hash": head_hash,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "key_id": key_id(),
    }
    return Checkpoint(**fields, signature=sign(fields))


def write_checkpoint() -> Checkpoint | None:
    """Checkpoint the current head (after chaining anything pending). None for an empty chain.

    Call it outside a transaction (the beat task, the export and the command do): a
    checkpoint of a head that then rolled back would later read as deleted events.
    """
    from .chain import chain_head, chain_pending

    chain_pending(wait=True)
    seq, head_hash = chain_head()
    if seq == 0:
        return None
    checkpoint = make_checkpoint(seq, head_hash)
    sink().write(checkpoint)
    return checkpoint


def trusted_checkpoints() -> list[Checkpoint]:
    """Every checkpoint in the sink, each with its signature checked."""
    checkpoints = sink().read_all()
    for checkpoint in checkpoints:
        if checkpoint.key_id != key_id():
            raise CheckpointError(
                f"Checkpoint for seq {checkpoint.seq} was signed with key {checkpoint.key_id}, "
                f"not the configured key {key_id()}."
            )
        if not checkpoint.signature_valid():
            raise CheckpointError(f"Checkpoint for seq {checkpoint.seq} has an invalid signature (altered).")
    return checkpoints
