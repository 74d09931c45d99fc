"""The management commands: audit_verify, audit_checkpoint, audit_export and
audit_verify_export, as an operator runs them."""

import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from apps import audit
from apps.audit.chain import chain_pending
from apps.audit.exports import manifest_bytes, zip_stream
from apps.audit.models import AuditEvent, PendingEvent
from apps.audit.services import prepare_export
from tests.accounts.factories import UserFactory

pytestmark = pytest.mark.django_db

TABLE = AuditEvent._meta.db_table


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def events():
    """Four events in 2025 and six in 2026, tenants 1 and 2 alternating."""
    for number in range(1, 11):
        audit.record(
            "tool.executed",
            tenant=1 + number % 2,
            tool=f"tool_{number}",
            outcome="ok",
            occurred_at=datetime(2025, 12, 27, tzinfo=UTC) + timedelta(days=number),
        )
    chain_pending()


@pytest.fixture
def out_dir(tmp_path):
    """Where exports go (tmp_path also holds this test's checkpoint directory)."""
    directory = tmp_path / "out"
    directory.mkdir()
    return directory


def checkpoint_files() -> list[Path]:
    return sorted(Path(settings.AUDIT_CHECKPOINT_DIR).glob("checkpoint-*.json"))


def tamper_with(seq: int) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")  # the append-only trigger off
        cursor.execute(
            f"UPDATE {TABLE} SET body = REPLACE(body, %s, %s) WHERE seq = %s",  # noqa: S608
            ['"outcome":"ok"', '"outcome":"no"', seq],
        )
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = DEFAULT")
    assert AuditEvent.objects.get(seq=seq).outcome == "no"


# --- audit_verify -------------------------------------------------------------------------


def test_verify_reports_ok_with_the_count(events):
    assert "OK: 10 events verified (seq 1..10)." in run("audit_verify")


def test_verify_of_an_empty_chain_is_ok():
    assert "OK: 0 events verified." in run("audit_verify")


def test_verify_fails_at_the_first_broken_seq(events):
    tamper_with(6)
    with pytest.raises(CommandError, match=r"^BROKEN at seq 6: .*edited"):
        run("audit_verify")


def test_verify_since_a_date(events):
    assert "OK: 6 events verified (seq 5..10)." in run("audit_verify", "--since", "2026-01-01")
    assert "OK: 5 events verified (seq 6..10)." in run("audit_verify", "--since", "2026-01-01T12:00:00+00:00")


def test_verify_since_a_seq(events):
    assert "OK: 6 events verified (seq 5..10)." in run("audit_verify", "--since", "5")
    assert "OK: 10 events verified (seq 1..10)." in run("audit_verify", "--since", "0")
    tamper_with(3)
    assert "OK: 6 events verified" in run("audit_verify", "--since", "5")
    with pytest.raises(CommandError, match="BROKEN at seq 3"):
        run("audit_verify", "--since", "2")


@pytest.mark.parametrize("since", ["nonsense", "-3", "2026-13-45"])
def test_verify_since_something_else_is_a_clear_error(events, since):
    with pytest.raises(CommandError, match="neither a seq number nor an ISO date"):
        run("audit_verify", "--since", since)


def test_verify_checks_the_signed_checkpoints(events):
    run("audit_checkpoint")
    assert "consistent with 1 signed checkpoint(s)" in run("audit_verify")


def test_verify_refuses_untrusted_checkpoints_unless_told_to_ignore_them(events):
    run("audit_checkpoint")
    (path,) = checkpoint_files()
    path.write_text(json.dumps({**json.loads(path.read_text()), "head_hash": "0" * 64}))
    with pytest.raises(CommandError, match=r"Checkpoints cannot be trusted: .*invalid signature"):
        run("audit_verify")
    assert "OK: 10 events verified" in run("audit_verify", "--no-checkpoints")


# --- audit_checkpoint ---------------------------------------------------------------------


def test_checkpoint_of_an_empty_chain_writes_nothing():
    assert "The audit chain is empty" in run("audit_checkpoint")
    assert checkpoint_files() == []


def test_checkpoint_writes_the_head(events):
    head = AuditEvent.objects.get(seq=10)
    assert f"Checkpoint written: seq 10, head {head.row_hash}." in run("audit_checkpoint")
    assert (Path(settings.AUDIT_CHECKPOINT_DIR) / "checkpoint-000000000010.json").exists()


# --- audit_export -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_writes_the_data_file_and_its_manifest(events, out_dir, fmt):
    output = out_dir / f"x.{fmt}"
    out = run("audit_export", "--format", fmt, "--output", str(output))
    assert f"Exported 11 events to {output} (manifest: x.{fmt}.manifest.json)." in out
    assert sorted(path.name for path in out_dir.iterdir()) == [f"x.{fmt}", f"x.{fmt}.manifest.json"]
    manifest = json.loads((out_dir / f"x.{fmt}.manifest.json").read_text())
    assert manifest["row_count"] == 11
    assert manifest["format"] == fmt
    assert [path.name for path in checkpoint_files()] == ["checkpoint-000000000011.json"]
    assert "OK: 11 rows (seq 1..11)" in run("audit_verify_export", str(output))


def test_export_of_a_filter(events, out_dir):
    output = out_dir / "x.csv"
    run(
        "audit_export", "--output", str(output), "--tenant", "1", "--date-from", "2026-01-01", "--date-to", "2026-01-31"
    )
    manifest = json.loads((out_dir / "x.csv.manifest.json").read_text())
    # Tenant 1 in January 2026: events 6, 8 and 10 (the export.created event is of today).
    assert manifest["filters"] == {"date_from": "2026-01-01", "date_to": "2026-01-31", "tenant": 1}
    assert manifest["row_count"] == 3
    assert (manifest["first_seq"], manifest["last_seq"]) == (6, 10)
    assert manifest["contiguous"] is False
    assert "OK: 3 rows (seq 6..10)" in run("audit_verify_export", str(output))


def test_export_records_who_exported(events, out_dir):
    UserFactory(username="carol")
    run("audit_export", "--output", str(out_dir / "x.csv"), "--as-user", "carol")
    assert AuditEvent.objects.get(event_type="export.created").actor_name == "carol"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--date-from", "2026-02-01", "--date-to", "2026-01-01"], "Bad filter: The start date is after the end date."),
        (["--date-from", "yesterday"], "Bad filter: date_from"),
        (["--agent", "zero"], "Bad filter: agent"),
        (["--as-user", "nobody-by-that-name"], "No user named 'nobody-by-that-name'"),
    ],
)
def test_a_bad_export_request_is_an_error_and_writes_nothing(events, out_dir, arguments, message):
    before = AuditEvent.objects.count()
    with pytest.raises(CommandError, match=message):
        run("audit_export", "--output", str(out_dir / "x.csv"), *arguments)
    assert list(out_dir.iterdir()) == []
    assert AuditEvent.objects.count() == before
    assert not PendingEvent.objects.exists()  # no export.created event either
    assert checkpoint_files() == []


def test_export_to_a_missing_directory_is_an_error(events, out_dir):
    with pytest.raises(CommandError, match="does not exist"):
        run("audit_export", "--output", str(out_dir / "missing" / "x.csv"))
    assert not PendingEvent.objects.exists()


# --- audit_verify_export ------------------------------------------------------------------


def test_verify_export_of_a_zip(events, out_dir):
    export = prepare_export(user=None, queryset=AuditEvent.objects.all(), filters={}, fmt="jsonl")
    archive = out_dir / "export.zip"
    archive.write_bytes(b"".join(zip_stream(export.chunks, "jsonl", export.manifest)))
    assert "OK: 11 rows (seq 1..11)" in run("audit_verify_export", str(archive))


def test_verify_export_of_a_tampered_file_is_invalid(events, out_dir):
    output = out_dir / "x.csv"
    run("audit_export", "--output", str(output))
    output.write_text(output.read_text().replace("tool_4", "tool_5", 1))
    with pytest.raises(CommandError, match=r"^INVALID: "):
        run("audit_verify_export", str(output))


def test_verify_export_with_a_manifest_named_elsewhere(events, out_dir):
    output = out_dir / "x.csv"
    run("audit_export", "--output", str(output))
    elsewhere = out_dir / "signed.json"
    (out_dir / "x.csv.manifest.json").rename(elsewhere)
    with pytest.raises(CommandError, match=r"^INVALID: no manifest"):
        run("audit_verify_export", str(output))
    assert "OK: 11 rows" in run("audit_verify_export", str(output), "--manifest", str(elsewhere))


def test_verify_export_with_another_key_is_invalid(events, out_dir, settings):
    output = out_dir / "x.csv"
    run("audit_export", "--output", str(output))
    settings.AUDIT_SIGNING_KEY = "another-key"
    with pytest.raises(CommandError, match=r"^INVALID: the manifest was signed with key"):
        run("audit_verify_export", str(output))


def test_verify_export_of_a_manifest_that_is_not_json(events, out_dir):
    output = out_dir / "x.csv"
    run("audit_export", "--output", str(output))
    (out_dir / "x.csv.manifest.json").write_bytes(manifest_bytes({"not": "signed"})[:-3])
    with pytest.raises(CommandError, match=r"^INVALID: the manifest is not JSON"):
        run("audit_verify_export", str(output))
