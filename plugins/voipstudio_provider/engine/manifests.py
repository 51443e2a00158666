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

from voipstudio_provider.engine.layout import manifest_key, manifests_prefix
from voipstudio_provider.engine.ledger import jsonl, put_bytes
from voipstudio_provider.engine.s3objects import is_not_found, put_json

FORMAT = "voipstudio-archive-manifest/1"
LINE_FIELDS = ("key", "size", "sha256", "s3_checksum", "etag", "record_id", "kind", "archived_at")
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
    """The ``.jsonl`` body: one line per object, sorted by key, only the manifest's fields."""
    rows = sorted(({f: e.get(f) for f in LINE_FIELDS} for e in entries), key=lambda r: r["key"])
    return jsonl(rows)


def write_day(
    s3_client,
    target,
    day: dt.date,
    entries: Iterable[Mapping[str, Any]],
    index: dict[dt.date, list[tuple[int, str]]],
) -> dict[str, Any] | None:
    """Write ``day``'s manifest unless its latest version already lists exactly ``entries``.

    :param target: the :class:`~voipstudio_provider.engine.archive.ArchiveTarget`; its Object Lock
        and encryption options apply to the manifests as to the binaries.
    :param index: :func:`manifest_index`, updated with what is written.
    :return: the written ``manifest.json`` document, or ``None`` when nothing changed.
    """
    entries = list(entries)
    body = manifest_lines(entries)
    body_sha = sha256_hex(body)
    versions = index.get(day, [])
    supersedes = None
    if versions:
        latest_version, latest_key = versions[-1]
        latest_bytes = read_bytes(s3_client, target.bucket, latest_key)
        if latest_bytes is not None:
            latest = json.loads(latest_bytes)
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
    kinds = Counter(e.get("kind") for e in entries)
    document = {
        "format": FORMAT,
        "day": day.isoformat(),
        "version": version,
        "objects": len(entries),
        "bytes": sum(int(e.get("size") or 0) for e in entries),
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
