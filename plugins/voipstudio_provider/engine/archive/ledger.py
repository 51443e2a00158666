"""What each archive batch stored, written once per batch and day (README, "The ledger").

A ledger line names one object the batch uploaded: ``key``, ``size``, ``sha256`` (of the
bytes downloaded), ``s3_checksum`` (S3's own ``ChecksumSHA256``), ``etag``, ``record_id``,
``kind`` and ``archived_at``. The reconciliation compares the bucket listing (key, size,
ETag) with these lines instead of asking S3 about each object, and the daily manifests are
built from them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from voipstudio_provider.engine.layout import key_day, ledger_key, ledger_prefix
from voipstudio_provider.engine.s3objects import jsonl, put_checked

log = logging.getLogger(__name__)


def s3_digests(s3_client, bucket: str, key: str) -> tuple[str | None, str | None]:
    """``(ChecksumSHA256, ETag)`` of a stored object: one HEAD with checksum mode on."""
    head = s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    return head.get("ChecksumSHA256"), bare_etag(head.get("ETag"))


def bare_etag(etag: str | None) -> str | None:
    """An ETag without its quotes, as both HEAD and LIST give it quoted."""
    return etag.strip('"') if etag else None


def ledger_lines(s3_client, bucket: str, outcomes: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """One line per archived outcome; an outcome without S3's digests costs one HEAD."""
    archived_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for outcome in outcomes:
        if outcome.status != "archived":
            continue
        checksum = getattr(outcome, "s3_checksum", None)
        etag = bare_etag(getattr(outcome, "etag", None))
        if checksum is None or etag is None:
            checksum, etag = s3_digests(s3_client, bucket, outcome.key)
        yield {
            "kind": outcome.kind,
            "record_id": int(outcome.record_id),
            "key": outcome.key,
            "size": outcome.size,
            "sha256": outcome.sha256,
            "s3_checksum": checksum,
            "etag": etag,
            "archived_at": archived_at,
        }


def put_bytes(s3_client, target, key: str, body: bytes, content_type: str) -> str:
    """PUT ``body`` with the target's options and a SHA-256 that S3 checks; return its hex.

    Written in a storage class that can be read at once (ledgers and manifests are read
    back by every reconciliation), with the target's encryption, Object Lock and tags.
    """
    return put_checked(
        s3_client,
        target.bucket,
        key,
        body,
        content_type=content_type,
        write_args=target.document_args(),
    )


def write_ledger(s3_client, target, batch: Mapping[str, Any], outcomes: Iterable[Any]) -> list[str]:
    """PUT one ledger object per day the batch's archived objects fall on.

    :param target: the batch's
        :class:`~voipstudio_provider.engine.archive.targets.ArchiveTarget`; its options
        (encryption, Object Lock) apply to the ledger too.
    :return: the ledger keys written.
    """
    by_day: dict[dt.date, list[dict[str, Any]]] = {}
    for line in ledger_lines(s3_client, target.bucket, outcomes):
        by_day.setdefault(key_day(line["key"]), []).append(line)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{batch['kind']}-{int(batch['first_id'])}-{int(batch['last_id'])}-{stamp}"
    keys = []
    for day, lines in sorted(by_day.items()):
        key = ledger_key(target.prefix, day, name)
        put_bytes(s3_client, target, key, jsonl(lines), "application/x-ndjson")
        keys.append(key)
    return keys


def read_day(
    s3_client,
    bucket: str,
    prefix: str,
    day: dt.date,
    *,
    base: Mapping[str, Mapping[str, Any]] | None = None,
    newer_than: dt.datetime | None = None,
) -> tuple[dict[str, dict[str, Any]], int, int]:
    """Every ledger line of ``day`` by object key; the line of the latest batch wins.

    :param base: lines already known (a day's manifest), which the ledgers update.
    :param newer_than: read only ledger objects stored after this moment (those before it
        are in ``base``).
    :return: ``({key: line}, LIST requests, GET requests)``.
    """
    paginator = s3_client.get_paginator("list_objects_v2")
    keys: list[str] = []
    lists = 0
    for page in paginator.paginate(Bucket=bucket, Prefix=ledger_prefix(prefix, day)):
        lists += 1
        for obj in page.get("Contents", []):
            if newer_than is None or obj["LastModified"] >= newer_than:
                keys.append(obj["Key"])
    lines: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (base or {}).items()}
    for key in sorted(keys, key=lambda k: k.rsplit("-", 1)[-1]):  # names end in their time
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"]
        with body:
            for raw in body.iter_lines():
                if raw.strip():
                    line = json.loads(raw)
                    lines[line["key"]] = line
    return lines, lists, len(keys)
