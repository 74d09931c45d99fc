"""Exports of the audit trail with a signed manifest, and their offline verification.

An export is a data file (CSV or JSONL) plus ``manifest.json``: the filter, row count,
first/last seq, the chain hashes at both ends, the SHA-256 of the data file, and an
HMAC-SHA256 signature over all of it with ``AUDIT_SIGNING_KEY``. Every row carries its
seq, prev_hash, row_hash and hashed body, so each row's hash can be recomputed from the
file alone (and, for an unfiltered export, every link between rows).

Rows are streamed from a server-side cursor and written as they come: memory stays flat
however many rows. CSV cells that a spreadsheet would run as a formula (starting with
=, +, -, @, tab or carriage return) are prefixed with an apostrophe; so are cells that start
with an apostrophe, so that the verifier can tell the prefix from the value.
"""

import csv
import hashlib
import hmac
import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from .canonical import GENESIS_HASH, chain_hash
from .checkpoints import key_id, sign, signing_key

FORMATS = ("csv", "jsonl")
CSV_COLUMNS = (
    "seq",
    "occurred_at",
    "event_type",
    "tenant_id",
    "actor_id",
    "actor_name",
    "agent_id",
    "conversation_id",
    "turn_id",
    "tool",
    "decision",
    "reason",
    "outcome",
    "approver_id",
    "approver_name",
    "prev_hash",
    "row_hash",
    "body",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ESCAPED_START = (*_FORMULA_START, "'")
MANIFEST_NAME = "manifest.json"


def data_file_name(fmt: str) -> str:
    return f"audit-events.{fmt}"


def escape_cell(value) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if text.startswith(_ESCAPED_START):
        return "'" + text
    return text


def unescape_cell(text: str) -> str:
    if text.startswith("'") and text[1:].startswith(_ESCAPED_START):
        return text[1:]
    return text


class _Digesting:
    """Counts rows and hashes the bytes of the data file as they are produced."""

    def __init__(self):
        self.sha256 = hashlib.sha256()
        self.count = 0
        self.first: tuple[int, str, str] | None = None
        self.last: tuple[int, str] | None = None
        self.contiguous = True
        self._previous: tuple[int, str] | None = None

    def row(self, seq: int, prev_hash: str, row_hash: str) -> None:
        if self.first is None:
            self.first = (seq, prev_hash, row_hash)
        elif self._previous is not None and (seq != self._previous[0] + 1 or prev_hash != self._previous[1]):
            self.contiguous = False
        self._previous = (seq, row_hash)
        self.last = (seq, row_hash)
        self.count += 1


def _csv_chunks(rows: Iterable[tuple], digest: _Digesting, chunk_rows: int) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    pending = 0
    for row in rows:
        seq, occurred_at = row[0], row[1]
        digest.row(seq, row[-3], row[-2])
        writer.writerow(
            (
                seq,
                occurred_at.isoformat() if occurred_at else "",
                *(escape_cell(value) for value in row[2:-3]),
                *row[-3:],
            )
        )
        pending += 1
        if pending >= chunk_rows:
            data = buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
            digest.sha256.update(data)
            yield data
    data = buffer.getvalue().encode()
    digest.sha256.update(data)
    yield data


def _jsonl_chunks(rows: Iterable[tuple], digest: _Digesting, chunk_rows: int) -> Iterator[bytes]:
    lines = []
    for row in rows:
        seq, prev_hash, row_hash, body = row[0], row[-3], row[-2], row[-1]
        digest.row(seq, prev_hash, row_hash)
        # The body is canonical JSON already: embedded as is, so its exact bytes can be
        # cut back out of the line and re-hashed.
        lines.append(f'{{"seq":{seq},"prev_hash":"{prev_hash}","row_hash":"{row_hash}","event":{body}}}\n')
        if len(lines) >= chunk_rows:
            data = "".join(lines).encode()
            lines.clear()
            digest.sha256.update(data)
            yield data
    data = "".join(lines).encode()
    digest.sha256.update(data)
    yield data


def data_chunks(rows: Iterable[tuple], fmt: str, digest: _Digesting, chunk_rows: int = 2000) -> Iterator[bytes]:
    """Encode rows (``CSV_COLUMNS`` order) as the data file, chunk by chunk."""
    if fmt == "csv":
        return _csv_chunks(rows, digest, chunk_rows)
    if fmt == "jsonl":
        return _jsonl_chunks(rows, digest, chunk_rows)
    raise ValueError(f"Unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.")


def build_manifest(
    *, fmt: str, filters: dict, scope, digest: _Digesting, chain_head: tuple[int, str], created_by: str
) -> dict:
    manifest = {
        "manifest_version": 1,
        "format": fmt,
        "data_file": data_file_name(fmt),
        "filters": filters,
        "tenant_scope": scope,
        "row_count": digest.count,
        "first_seq": digest.first[0] if digest.first else None,
        "last_seq": digest.last[0] if digest.last else None,
        "first_prev_hash": digest.first[1] if digest.first else None,
        "first_row_hash": digest.first[2] if digest.first else None,
        "last_row_hash": digest.last[1] if digest.last else None,
        "contiguous": digest.contiguous,
        "chain_head_seq": chain_head[0],
        "chain_head_hash": chain_head[1],
        "data_sha256": digest.sha256.hexdigest(),
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "created_by": created_by,
        "key_id": key_id(),
    }
    manifest["signature"] = sign(manifest)
    return manifest


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


class _ChunkSink(io.RawIOBase):
    """A write-only, unseekable stream whose contents a generator hands on and drops."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def zip_stream(chunks: Iterable[bytes], fmt: str, make_manifest) -> Iterator[bytes]:
    """A zip file (data file + manifest.json) produced while the rows stream.
    ``make_manifest()`` is called after the last row, when the digest is complete."""
    sink = _ChunkSink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open(data_file_name(fmt), "w", force_zip64=True) as member:
            for chunk in chunks:
                member.write(chunk)
                data = sink.take()
                if data:
                    yield data
        archive.writestr(MANIFEST_NAME, manifest_bytes(make_manifest()))
    yield sink.take()


# --- Offline verification -------------------------------------------------------------


class ExportInvalid(Exception):
    pass


class _HashingReader(io.RawIOBase):
    """Reads a binary stream through, hashing every byte read."""

    def __init__(self, stream):
        self.stream = stream
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        self.sha256.update(data)
        buffer[: len(data)] = data
        return len(data)


def _rows_of(text: io.TextIOBase, fmt: str) -> Iterator[tuple[int, str, str, str, int]]:
    """(seq, prev_hash, row_hash, body, line number) of each row of a data file."""
    if fmt == "jsonl":
        for number, raw_line in enumerate(text, start=1):
            line = raw_line.rstrip("\n")
            marker = line.find(',"event":')
            if not line.startswith('{"seq":') or marker < 0 or not line.endswith("}"):
                raise ExportInvalid(f"line {number} is not an export row")
            head = json.loads(line[:marker] + "}")
            yield head["seq"], head["prev_hash"], head["row_hash"], line[marker + len(',"event":') : -1], number
        return
    reader = csv.reader(text)
    header = next(reader, None)
    if tuple(header or ()) != CSV_COLUMNS:
        raise ExportInvalid("the CSV header is not an audit export's")
    for number, cells in enumerate(reader, start=2):
        if len(cells) != len(CSV_COLUMNS):
            raise ExportInvalid(f"line {number} has {len(cells)} cells, expected {len(CSV_COLUMNS)}")
        try:
            seq = int(cells[0])
            event = json.loads(cells[-1])
        except ValueError:
            raise ExportInvalid(f"line {number}: the seq or the body cannot be read") from None
        for column, cell in zip(CSV_COLUMNS[2:-3], cells[2:-3], strict=True):
            expected = event.get(column)
            if unescape_cell(cell) != ("" if expected is None else str(expected)):
                raise ExportInvalid(f"line {number} (seq {seq}): column {column} does not match the hashed body")
        yield seq, cells[-3], cells[-2], cells[-1], number


def check_manifest_signature(manifest: dict, key: bytes | None = None) -> None:
    key = key or signing_key()
    if manifest.get("key_id") != key_id(key):
        raise ExportInvalid(f"the manifest was signed with key {manifest.get('key_id')}, not this key ({key_id(key)})")
    signature = manifest.get("signature")
    unsigned = {name: value for name, value in manifest.items() if name != "signature"}
    if not isinstance(signature, str) or not hmac.compare_digest(signature, sign(unsigned, key)):
        raise ExportInvalid("the manifest's signature does not match its contents (manifest altered)")
    if manifest.get("format") not in FORMATS:
        raise ExportInvalid(f"unknown format {manifest.get('format')!r}")


def verify_export(data_stream, manifest: dict, key: bytes | None = None) -> str:
    """Check a data file (a binary stream, read once) against its manifest without any
    database. Returns a summary; raises ExportInvalid naming the first problem."""
    check_manifest_signature(manifest, key)
    fmt = manifest["format"]
    hashing = _HashingReader(data_stream)
    text = io.TextIOWrapper(io.BufferedReader(hashing, buffer_size=1 << 20), encoding="utf-8", newline="")
    count, first, last = 0, None, None
    try:
        for seq, prev_hash, row_hash, body, number in _rows_of(text, fmt):
            if chain_hash(prev_hash, seq, body) != row_hash:
                raise ExportInvalid(f"line {number} (seq {seq}): the row does not match its hash (edited)")
            if manifest["contiguous"] and last is not None and (seq, prev_hash) != (last[0] + 1, last[1]):
                raise ExportInvalid(f"line {number} (seq {seq}): does not follow the previous row in the chain")
            if first is None:
                first = (seq, prev_hash, row_hash)
            last = (seq, row_hash)
            count += 1
        text.read()  # anything after the last row still counts towards the digest
    except (UnicodeDecodeError, KeyError, ValueError) as error:
        if isinstance(error, ExportInvalid):
            raise
        raise ExportInvalid(f"the data file cannot be read as {fmt}: {error}") from error
    if hashing.sha256.hexdigest() != manifest["data_sha256"]:
        raise ExportInvalid("the data file's SHA-256 differs from the manifest's (file altered)")
    if count != manifest["row_count"]:
        raise ExportInvalid(f"the file has {count} rows, the manifest says {manifest['row_count']}")
    ends = (*(first or (None, None, None)), *(last or (None, None)))
    expected = tuple(
        manifest[name] for name in ("first_seq", "first_prev_hash", "first_row_hash", "last_seq", "last_row_hash")
    )
    if ends != expected:
        raise ExportInvalid("the first or last row differs from the manifest's chain hashes")
    if first and first[0] == 1 and first[1] != GENESIS_HASH:
        raise ExportInvalid("seq 1 does not start from the genesis hash")
    return (
        f"OK: {count} rows (seq {manifest['first_seq']}..{manifest['last_seq']}) match the signed manifest "
        f"of {manifest['created_at']}."
    )


def verify_export_file(path: Path, manifest_path: Path | None = None, key: bytes | None = None) -> str:
    """Verify an export on disk: a zip (data file + manifest.json), or a data file and its
    manifest (default: ``<data file>.manifest.json``)."""
    path = Path(path)
    if not path.exists():
        raise ExportInvalid(f"{path} does not exist")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if MANIFEST_NAME not in names:
                raise ExportInvalid(f"{path} holds no {MANIFEST_NAME}")
            manifest = _load_manifest(archive.read(MANIFEST_NAME))
            if manifest.get("data_file") not in names:
                raise ExportInvalid(f"{path} holds no {manifest.get('data_file')}")
            with archive.open(manifest["data_file"]) as stream:
                return verify_export(stream, manifest, key)
    manifest_path = Path(manifest_path) if manifest_path else path.with_name(path.name + ".manifest.json")
    if not manifest_path.exists():
        raise ExportInvalid(f"no manifest at {manifest_path}; name it with --manifest")
    manifest = _load_manifest(manifest_path.read_bytes())
    with open(path, "rb") as stream:
        return verify_export(stream, manifest, key)


def _load_manifest(raw: bytes) -> dict:
    try:
        manifest = json.loads(raw)
    except ValueError as error:
        raise ExportInvalid(f"the manifest is not JSON: {error}") from error
    if not isinstance(manifest, dict):
        raise ExportInvalid("the manifest is not a JSON object")
    return manifest
