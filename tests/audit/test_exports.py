"""Exports with a signed manifest: what they contain, that they verify offline, and that
any change to the data or the manifest (or the wrong key) is caught."""

import csv
import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import pytest

from apps import audit
from apps.audit.canonical import GENESIS_HASH, chain_hash
from apps.audit.chain import chain_pending
from apps.audit.checkpoints import key_id, trusted_checkpoints
from apps.audit.exports import (
    CSV_COLUMNS,
    MANIFEST_NAME,
    ExportInvalid,
    data_file_name,
    manifest_bytes,
    unescape_cell,
    verify_export_file,
    zip_stream,
)
from apps.audit.models import AuditEvent
from apps.audit.selectors import filter_events
from apps.audit.services import prepare_export
from tests.accounts.factories import UserFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 2, 1, tzinfo=UTC)


def record_events(count: int) -> None:
    for number in range(1, count + 1):
        audit.record(
            "tool.executed",
            tenant=1 + number % 2,
            tool=f"tool_{number}",
            outcome="ok",
            reason="within_policy",
            occurred_at=START + timedelta(hours=number),
        )
    chain_pending()


def export_to(directory, fmt, *, filters=None, user=None):
    """Export like the command does: stream the chunks to the data file, then write the
    manifest next to it. Returns (data path, manifest)."""
    filters = filters or {}
    export = prepare_export(
        user=user, queryset=filter_events(AuditEvent.objects.all(), filters), filters=filters, fmt=fmt
    )
    data = directory / data_file_name(fmt)
    with open(data, "wb") as handle:
        for chunk in export.chunks:
            handle.write(chunk)
    manifest = export.manifest()
    manifest_path(data).write_bytes(manifest_bytes(manifest))
    return data, manifest


def manifest_path(data):
    return data.with_name(data.name + ".manifest.json")


def csv_rows(data) -> list[dict]:
    with open(data, newline="") as handle:
        return list(csv.DictReader(handle))


def replace_once(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def events():
    record_events(10)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_holds_every_row_and_verifies(events, tmp_path, fmt):
    data, manifest = export_to(tmp_path, fmt)

    # The ten events and the export.created event recorded by the export itself.
    assert manifest["row_count"] == 11
    assert (manifest["first_seq"], manifest["last_seq"]) == (1, 11)
    assert manifest["first_prev_hash"] == GENESIS_HASH
    assert manifest["first_row_hash"] == AuditEvent.objects.get(seq=1).row_hash
    assert manifest["last_row_hash"] == AuditEvent.objects.get(seq=11).row_hash
    assert (manifest["chain_head_seq"], manifest["chain_head_hash"]) == (11, AuditEvent.objects.get(seq=11).row_hash)
    assert manifest["contiguous"] is True
    assert manifest["format"] == fmt
    assert manifest["created_by"] == "(command line)"
    assert manifest["key_id"] == key_id()
    assert manifest["data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()

    summary = verify_export_file(data)
    assert summary.startswith("OK: 11 rows (seq 1..11) match the signed manifest")

    bodies = dict(AuditEvent.objects.values_list("seq", "body"))
    if fmt == "csv":
        rows = csv_rows(data)
        assert tuple(rows[0]) == CSV_COLUMNS
        assert {int(row["seq"]): row["body"] for row in rows} == bodies
        assert rows[0]["tool"] == "tool_1"
        assert datetime.fromisoformat(rows[0]["occurred_at"]) == START + timedelta(hours=1)
    else:
        lines = data.read_text().splitlines()
        parsed = [json.loads(line) for line in lines]
        assert [row["seq"] for row in parsed] == list(range(1, 12))
        for line, row in zip(lines, parsed, strict=True):
            # The hashed body is embedded byte for byte.
            assert line.endswith(',"event":' + bodies[row["seq"]] + "}")
            assert chain_hash(row["prev_hash"], row["seq"], bodies[row["seq"]]) == row["row_hash"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_zip_export_verifies(events, tmp_path, fmt):
    export = prepare_export(user=None, queryset=AuditEvent.objects.all(), filters={}, fmt=fmt)
    archive = tmp_path / "export.zip"
    archive.write_bytes(b"".join(zip_stream(export.chunks, fmt, export.manifest)))
    assert verify_export_file(archive).startswith("OK: 11 rows")


@pytest.mark.parametrize(
    ("fmt", "old", "new"),
    [
        ("csv", '"outcome"":""ok""', '"outcome"":""no""'),  # a letter in the hashed body
        ("jsonl", '"outcome":"ok"', '"outcome":"no"'),
        ("csv", "tool_3,", "tool_8,"),  # a search column: no longer matches the body
    ],
    ids=["csv-body", "jsonl-body", "csv-column"],
)
def test_a_changed_byte_in_the_data_file_is_caught(events, tmp_path, fmt, old, new):
    data, _manifest = export_to(tmp_path, fmt)
    replace_once(data, old, new)
    with pytest.raises(ExportInvalid, match=r"\(seq [13]\)"):
        verify_export_file(data)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_changed_digit_in_a_hash_is_caught(events, tmp_path, fmt):
    data, _manifest = export_to(tmp_path, fmt)
    row_hash = AuditEvent.objects.get(seq=5).row_hash
    flipped = row_hash[:10] + ("1" if row_hash[10] != "1" else "2") + row_hash[11:]
    replace_once(data, row_hash, flipped)  # seq 5's row_hash (seq 6 links to it after)
    with pytest.raises(ExportInvalid, match="seq 5"):
        verify_export_file(data)


def test_a_removed_row_is_caught(events, tmp_path):
    data, _manifest = export_to(tmp_path, "jsonl")
    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join(lines[:4] + lines[5:]))
    with pytest.raises(ExportInvalid, match="does not follow the previous row"):
        verify_export_file(data)
    data.write_text("".join(lines[:-1]))  # the last row: every remaining row is intact
    with pytest.raises(ExportInvalid, match="SHA-256"):
        verify_export_file(data)


def test_an_edited_and_consistently_re_hashed_file_is_caught(events, tmp_path):
    """An attacker who rewrites a row and re-hashes every row after it still cannot match
    the signed manifest without the key."""
    data, _manifest = export_to(tmp_path, "jsonl")
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    prev = GENESIS_HASH
    lines = []
    for row in rows:
        event = row["event"]
        if row["seq"] == 4:
            event["outcome"] = "denied"
        body = json.dumps(event, sort_keys=True, separators=(",", ":"))
        row_hash = chain_hash(prev, row["seq"], body)
        lines.append(f'{{"seq":{row["seq"]},"prev_hash":"{prev}","row_hash":"{row_hash}","event":{body}}}\n')
        prev = row_hash
    data.write_text("".join(lines))
    with pytest.raises(ExportInvalid, match="SHA-256"):
        verify_export_file(data)


@pytest.mark.parametrize(
    "changes",
    [{"row_count": 10}, {"last_seq": 10}, {"contiguous": False}, {"data_sha256": "0" * 64}, {"signature": "0" * 64}],
    ids=["row_count", "last_seq", "contiguous", "data_sha256", "signature"],
)
def test_an_edited_manifest_fails_its_signature(events, tmp_path, changes):
    data, manifest = export_to(tmp_path, "csv")
    manifest_path(data).write_bytes(manifest_bytes({**manifest, **changes}))
    with pytest.raises(ExportInvalid, match="signature does not match"):
        verify_export_file(data)


def test_a_changed_file_with_its_new_digest_in_the_manifest_fails_the_signature(events, tmp_path):
    data, manifest = export_to(tmp_path, "csv")
    replace_once(data, "within_policy", "outside_policy")
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    manifest_path(data).write_bytes(manifest_bytes({**manifest, "data_sha256": digest}))
    with pytest.raises(ExportInvalid, match="signature does not match"):
        verify_export_file(data)


def test_the_wrong_key_is_refused_naming_both_key_ids(events, tmp_path):
    data, manifest = export_to(tmp_path, "jsonl")
    other = b"someone-elses-key"
    with pytest.raises(ExportInvalid) as refused:
        verify_export_file(data, key=other)
    assert manifest["key_id"] in str(refused.value)
    assert key_id(other) in str(refused.value)


def test_a_missing_manifest_or_file_is_reported(tmp_path):
    data = tmp_path / "audit-events.csv"
    with pytest.raises(ExportInvalid, match="does not exist"):
        verify_export_file(data)
    data.write_text(",".join(CSV_COLUMNS) + "\n")
    with pytest.raises(ExportInvalid, match="no manifest"):
        verify_export_file(data)


def test_a_filtered_export_verifies_and_is_not_contiguous(events, tmp_path):
    data, manifest = export_to(tmp_path, "csv", filters={"tenant": 1})
    rows = csv_rows(data)
    # tenant 1: the even-numbered events, and the export.created event (recorded for that tenant).
    assert [row["tool"] for row in rows] == [f"tool_{number}" for number in range(2, 11, 2)] + [""]
    assert {row["tenant_id"] for row in rows} == {"1"}
    assert rows[-1]["event_type"] == "export.created"
    assert manifest["row_count"] == 6
    assert manifest["contiguous"] is False
    assert manifest["filters"] == {"tenant": 1}
    assert verify_export_file(data).startswith("OK: 6 rows")


def test_a_filtered_export_is_still_checked_row_by_row(events, tmp_path):
    data, _manifest = export_to(tmp_path, "jsonl", filters={"tenant": 2})
    replace_once(data, '"outcome":"ok"', '"outcome":"no"')
    with pytest.raises(ExportInvalid, match="edited"):
        verify_export_file(data)


FORMULAS = {
    "tool": "=cmd|' /C calc'!A0",
    "decision": "+1",
    "outcome": "-2",
    "reason": "\tsum",
    "conversation_id": "@x",
    "turn_id": "'=quoted",  # starts with an apostrophe already: must survive the round trip
}


def test_csv_cells_a_spreadsheet_would_run_are_escaped_and_the_body_is_not(tmp_path):
    audit.record("tool.executed", actor=UserFactory(username="@evil"), **FORMULAS)
    chain_pending()
    data, _manifest = export_to(tmp_path, "csv")
    row = csv_rows(data)[0]
    assert row["tool"] == "'=cmd|' /C calc'!A0"
    assert row["decision"] == "'+1"
    assert row["outcome"] == "'-2"
    assert row["reason"] == "'\tsum"
    assert row["conversation_id"] == "'@x"
    assert row["actor_name"] == "'@evil"
    assert unescape_cell(row["turn_id"]) == "'=quoted"
    # The body column is the hashed bytes, untouched.
    event = json.loads(row["body"])
    assert event["tool"] == "=cmd|' /C calc'!A0"
    assert event["actor_name"] == "@evil"
    assert row["body"] == AuditEvent.objects.get(seq=1).body
    assert verify_export_file(data).startswith("OK: 2 rows")


def test_jsonl_is_not_escaped(tmp_path):
    audit.record("tool.executed", **FORMULAS)
    chain_pending()
    data, _manifest = export_to(tmp_path, "jsonl")
    event = json.loads(data.read_text().splitlines()[0])["event"]
    assert event["tool"] == "=cmd|' /C calc'!A0"
    assert verify_export_file(data).startswith("OK: 2 rows")


def test_an_export_is_recorded_and_checkpointed(events, tmp_path):
    exporter = UserFactory(username="carol")
    _data, manifest = export_to(tmp_path, "jsonl", filters={"tool": "tool_3"}, user=exporter)
    recorded = AuditEvent.objects.get(event_type="export.created")
    assert recorded.seq == 11
    assert recorded.actor_name == "carol"
    assert recorded.outcome == "started"
    assert recorded.data["payload"] == {"filters": {"tool": "tool_3"}, "format": "jsonl", "scope": "all tenants"}
    assert manifest["tenant_scope"] == "all tenants"
    assert manifest["created_by"] == "carol"
    # The head at the time of the export is pinned by a signed checkpoint.
    assert [(point.seq, point.head_hash) for point in trusted_checkpoints()] == [(11, recorded.row_hash)]
    assert (manifest["chain_head_seq"], manifest["chain_head_hash"]) == (11, recorded.row_hash)
    assert manifest["row_count"] == 1  # only tool_3


def test_rows_chained_after_the_export_started_are_not_in_it(events, tmp_path):
    export = prepare_export(user=None, queryset=AuditEvent.objects.all(), filters={}, fmt="csv")
    assert export.upto_seq == 11
    record_events(3)  # chained before the rows are streamed
    assert AuditEvent.objects.count() == 14
    buffer = io.BytesIO(b"".join(export.chunks))
    manifest = export.manifest()
    assert manifest["row_count"] == 11
    assert manifest["last_seq"] == 11
    assert manifest["chain_head_seq"] == 11
    data = tmp_path / "audit-events.csv"
    data.write_bytes(buffer.getvalue())
    manifest_path(data).write_bytes(manifest_bytes(manifest))
    assert verify_export_file(data).startswith("OK: 11 rows")


def test_an_unknown_format_is_refused_before_anything_is_recorded():
    with pytest.raises(ValueError, match="Unknown export format"):
        prepare_export(user=None, queryset=AuditEvent.objects.all(), filters={}, fmt="xlsx")
    assert not AuditEvent.objects.exists()


def test_the_zip_holds_the_manifest_by_name(events, tmp_path):
    export = prepare_export(user=None, queryset=AuditEvent.objects.all(), filters={}, fmt="csv")
    archive = tmp_path / "export.zip"
    archive.write_bytes(b"".join(zip_stream(export.chunks, "csv", export.manifest)))
    with zipfile.ZipFile(archive) as opened:
        assert sorted(opened.namelist()) == sorted([MANIFEST_NAME, "audit-events.csv"])
        manifest = json.loads(opened.read(MANIFEST_NAME))
    assert manifest["row_count"] == 11
