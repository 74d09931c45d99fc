"""Signed checkpoints of the chain head, kept outside the database: written signed, refused
when altered or signed with another key, and checked by verify."""

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from django.conf import settings

from apps import audit
from apps.audit import tasks
from apps.audit.chain import verify_chain
from apps.audit.checkpoints import CheckpointError, key_id, trusted_checkpoints, write_checkpoint
from apps.audit.models import AuditEvent

from .helpers import chained

pytestmark = pytest.mark.django_db


def record_events(count: int) -> None:
    for number in range(count):
        audit.record("tool.executed", tool=f"tool_{number}")


def checkpoint_files() -> list[Path]:
    return sorted(Path(settings.AUDIT_CHECKPOINT_DIR).glob("checkpoint-*.json"))


def rewrite(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_an_empty_chain_writes_no_checkpoint():
    assert write_checkpoint() is None
    assert checkpoint_files() == []
    assert trusted_checkpoints() == []


def test_a_checkpoint_is_a_signed_file_of_the_head_after_chaining_what_is_pending():
    record_events(3)  # still pending: write_checkpoint chains them first
    checkpoint = write_checkpoint()

    head = AuditEvent.objects.get(seq=3)
    assert (checkpoint.seq, checkpoint.head_hash) == (3, head.row_hash)
    (path,) = checkpoint_files()
    assert path.name == "checkpoint-000000000003.json"
    assert not list(Path(settings.AUDIT_CHECKPOINT_DIR).glob(".checkpoint-*"))  # no temporary file left

    stored = json.loads(path.read_text())
    assert stored["seq"] == 3
    assert stored["head_hash"] == head.row_hash
    assert stored["key_id"] == hashlib.sha256(settings.AUDIT_SIGNING_KEY.encode()).hexdigest()[:12]
    # HMAC-SHA256 over the canonical JSON of the other fields, recomputed independently.
    signed = {name: stored[name] for name in ("seq", "head_hash", "created_at", "key_id")}
    message = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
    expected = hmac.new(settings.AUDIT_SIGNING_KEY.encode(), message, hashlib.sha256).hexdigest()
    assert stored["signature"] == expected

    assert trusted_checkpoints() == [checkpoint]


@pytest.mark.parametrize(
    "changes",
    [{"head_hash": "0" * 64}, {"seq": 2}, {"created_at": "2020-01-01T00:00:00Z"}, {"signature": "0" * 64}],
    ids=["head_hash", "seq", "created_at", "signature"],
)
def test_an_altered_checkpoint_is_refused(changes):
    record_events(3)
    write_checkpoint()
    (path,) = checkpoint_files()
    rewrite(path, **changes)
    with pytest.raises(CheckpointError, match="invalid signature"):
        trusted_checkpoints()


def test_a_checkpoint_forged_with_another_key_under_our_key_id_is_refused():
    record_events(3)
    write_checkpoint()
    (path,) = checkpoint_files()
    stored = json.loads(path.read_text())
    forged = {"seq": 3, "head_hash": "e" * 64, "created_at": stored["created_at"], "key_id": stored["key_id"]}
    message = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()
    rewrite(path, **forged, signature=hmac.new(b"attacker-key", message, hashlib.sha256).hexdigest())
    with pytest.raises(CheckpointError, match="invalid signature"):
        trusted_checkpoints()


def test_a_checkpoint_signed_with_another_key_is_refused_naming_both_keys(settings):
    record_events(3)
    write_checkpoint()
    old_key_id = key_id()
    settings.AUDIT_SIGNING_KEY = "a-rotated-signing-key"
    new_key_id = key_id()
    assert old_key_id != new_key_id
    with pytest.raises(CheckpointError) as refused:
        trusted_checkpoints()
    message = str(refused.value)
    assert old_key_id in message
    assert new_key_id in message
    assert "seq 3" in message


def test_an_unreadable_checkpoint_file_is_refused():
    record_events(1)
    write_checkpoint()
    (path,) = checkpoint_files()
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        trusted_checkpoints()
    path.write_text(json.dumps({"seq": 1}))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        trusted_checkpoints()


def test_verify_checks_the_chain_against_every_checkpoint():
    record_events(3)
    write_checkpoint()
    record_events(2)
    write_checkpoint()
    assert [path.name for path in checkpoint_files()] == [
        "checkpoint-000000000003.json",
        "checkpoint-000000000005.json",
    ]

    result = verify_chain(checkpoints=trusted_checkpoints())
    assert result.ok
    assert result.checkpoints_checked == 2
    assert result.summary() == "OK: 5 events verified (seq 1..5), consistent with 2 signed checkpoint(s)."


def test_the_periodic_verification_records_its_outcome():
    record_events(3)
    write_checkpoint()
    assert tasks.verify_chain() is True
    verified = chained(event_type="audit.verified").get()
    assert verified.outcome == "ok"
    assert verified.data["payload"]["broken_seq"] is None
    assert "OK: 3 events verified" in verified.data["payload"]["summary"]


def test_the_periodic_verification_records_untrusted_checkpoints_as_broken():
    record_events(3)
    write_checkpoint()
    (path,) = checkpoint_files()
    rewrite(path, head_hash="0" * 64)
    assert tasks.verify_chain() is False
    verified = chained(event_type="audit.verified").get()
    assert verified.outcome == "broken"
    assert "checkpoints unusable" in verified.data["payload"]["summary"]


def test_the_periodic_checkpoint_task_returns_the_seq():
    assert tasks.write_checkpoint() is None
    record_events(4)
    assert tasks.write_checkpoint() == 4
