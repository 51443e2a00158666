"""Daily manifests of the archive, chained (README, "Manifests").

``{p}/manifests/date=YYYY-MM-DD/manifest.jsonl`` lists every archived binary of the day,
one JSON object a line, sorted by key: ``key``, ``size``, ``sha256``, ``s3_checksum``,
``etag``, ``record_id``, ``kind``, ``archived_at``. ``manifest.json`` beside it holds the
day, the counts, the SHA-256 of the ``.jsonl`` and the SHA-256 of the previous day's
``manifest.json``. A later change to a day writes ``manifest.N.json`` (and
``manifest.N.jsonl``), naming the version it supersedes; nothing is rewritten in place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.engine.archive.ledger import put_bytes
from voipstudio_provider.engine.layout import manifest_key, manifests_prefix
from voipstudio_provider.engine.s3objects import is_not_found, jsonl, put_json

FORMAT = "voipstudio-archive-manifest/1"
#: A manifest version with at least one tombstone.
FORMAT_WITH_TOMBSTONES = "voipstudio-archive-manifest/2"
LINE_FIELDS = ("key", "size", "sha256", "s3_checksum", "etag", "record_id", "kind", "archived_at")
TOMBSTONE_FIELDS = ("key", "record_id", "kind", "tombstone")
_MANIFEST = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/manifest(?:\.(\d+))?\.json$")


def manifest_index(
    s3_client, bucket: str, prefix: str, stored_at: dict | None = None
) -> dict[dt.date, list[tuple[int, str]]]:
    """Every ``manifest*.json`` by day: ``{day: [(version, key), ...]}`` ascending.

    :param stored_at: filled with each manifest key's ``LastModified``, when given.
    """
    index: dict[dt.date, list[tuple[int, str]]] = {}
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=manifests_prefix(prefix)):
        for obj in page.get("Contents", []):
            found = _MANIFEST.search(obj["Key"])
            if found:
                day = dt.date.fromisoformat(found.group(1))
                index.setdefault(day, []).append((int(found.group(2) or 1), obj["Key"]))
                if stored_at is not None:
                    stored_at[obj["Key"]] = obj["LastModified"]
    return {day: sorted(versions) for day, versions in sorted(index.items())}


def read_lines(s3_client, bucket: str, key: str) -> dict[str, dict[str, Any]]:
    """The lines of a manifest's ``.jsonl`` by object key (empty if it is missing)."""
    body = read_bytes(s3_client, bucket, key) or b""
    return {line["key"]: line for line in map(json.loads, body.splitlines()) if line}


def read_bytes(s3_client, bucket: str, key: str) -> bytes | None:
    try:
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as error:
        if is_not_found(error):
            return None
        raise
    with body:
        return body.read()


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def manifest_lines(entries: Iterable[Mapping[str, Any]]) -> bytes:
    """The ``.jsonl`` body: one line per object, sorted by key, only the manifest's fields
    (a tombstone keeps its own)."""
    rows = sorted(
        (
            {f: e.get(f) for f in (TOMBSTONE_FIELDS if is_tombstone(e) else LINE_FIELDS)}
            for e in entries
        ),
        key=lambda r: r["key"],
    )
    return jsonl(rows)


def is_tombstone(line: Mapping[str, Any]) -> bool:
    """Whether a manifest line stands for an erased object."""
    return line.get("tombstone") is not None


def line_sha256(line: Mapping[str, Any]) -> str:
    """The SHA-256 of a manifest line as the ``.jsonl`` holds it, newline included."""
    return sha256_hex(manifest_lines([line]))


def tombstone(line: Mapping[str, Any], erased_at: str, reason: str, purge_run: str | None):
    """The tombstone that replaces ``line``: no digest or size of the erased bytes, only
    the removed line's SHA-256, when, why and by which purge."""
    return {
        "key": line["key"],
        "record_id": line.get("record_id"),
        "kind": line.get("kind"),
        "tombstone": {
            "line_sha256": line_sha256(line),
            "erased_at": erased_at,
            "reason": reason,
            "purge_run": purge_run,
        },
    }


def latest_lines(s3_client, bucket: str, prefix: str, day: dt.date, index) -> dict:
    """The lines of ``day``'s latest manifest version by key (empty when it has none)."""
    if not index.get(day):
        return {}
    version = index[day][-1][0]
    return read_lines(s3_client, bucket, manifest_key(prefix, day, version, "jsonl"))


def write_tombstones(
    s3_client, target, day: dt.date, erased: Mapping[str, Mapping[str, Any]], index
) -> dict[str, Any] | None:
    """A new version of ``day``'s manifest with each erased object's line replaced by a
    tombstone.

    :param erased: ``{key: {"erased_at", "reason", "purge_run"}}``; a key the manifest does
        not list as a live object is left as it is.
    :return: the new ``manifest.json`` document, ``None`` when no line changed.
    """
    lines = latest_lines(s3_client, target.bucket, target.prefix, day, index)
    changed = False
    for key, why in erased.items():
        line = lines.get(key)
        if line is not None and not is_tombstone(line):
            lines[key] = tombstone(line, why["erased_at"], why["reason"], why.get("purge_run"))
            changed = True
    return write_day(s3_client, target, day, lines.values(), index) if changed else None


def write_day(
    s3_client,
    target,
    day: dt.date,
    entries: Iterable[Mapping[str, Any]],
    index: dict[dt.date, list[tuple[int, str]]],
) -> dict[str, Any] | None:
    """Write ``day``'s manifest unless its latest version already lists exactly ``entries``.

    :param target: the :class:`~voipstudio_provider.engine.archive.targets.ArchiveTarget`; its
        Object Lock and encryption options apply to the manifests as to the binaries.
    :param index: :func:`manifest_index`, updated with what is written.
    :return: the written ``manifest.json`` document, or ``None`` when nothing changed.
    """
    entries = {e["key"]: e for e in entries}
    versions = index.get(day, [])
    supersedes = None
    latest_bytes = None
    if versions:
        latest_bytes = read_bytes(s3_client, target.bucket, versions[-1][1])
    latest = json.loads(latest_bytes) if latest_bytes is not None else {}
    if latest.get("tombstones"):
        # An erased object stays a tombstone: the ledgers that named it do not bring it back.
        lines_key = latest["jsonl"]["key"]
        for key, line in read_lines(s3_client, target.bucket, lines_key).items():
            if is_tombstone(line):
                entries[key] = line
    entries = list(entries.values())
    body = manifest_lines(entries)
    body_sha = sha256_hex(body)
    if versions:
        latest_key = versions[-1][1]
        if latest.get("jsonl", {}).get("sha256") == body_sha:
            return None
        supersedes = {"key": latest_key, "sha256": sha256_hex(latest_bytes or b"")}
    version = versions[-1][0] + 1 if versions else 1
    earlier = [d for d in index if d < day]
    previous = None
    if earlier:
        prev_day = max(earlier)
        prev_key = index[prev_day][-1][1]
        prev_bytes = read_bytes(s3_client, target.bucket, prev_key) or b""
        previous = {"day": prev_day.isoformat(), "key": prev_key, "sha256": sha256_hex(prev_bytes)}
    lines_key = manifest_key(target.prefix, day, version, "jsonl")
    put_bytes(s3_client, target, lines_key, body, "application/x-ndjson")
    live = [e for e in entries if not is_tombstone(e)]
    kinds = Counter(e.get("kind") for e in live)
    erased = len(entries) - len(live)
    document = {
        "format": FORMAT_WITH_TOMBSTONES if erased else FORMAT,
        "day": day.isoformat(),
        "version": version,
        "objects": len(entries),
        **({"tombstones": erased} if erased else {}),
        "bytes": sum(int(e.get("size") or 0) for e in live),
        "counts": dict(sorted(kinds.items())),
        "jsonl": {"key": lines_key, "sha256": body_sha},
        "previous": previous,
        "supersedes": supersedes,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    key = manifest_key(target.prefix, day, version)
    put_json(s3_client, target.bucket, key, document, write_args=target.document_args(), indent=1)
    index.setdefault(day, []).append((version, key))
    return document
