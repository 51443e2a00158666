"""The subject index: which phone numbers each archived record involves (README, "Bucket
layout").

When an archive batch stores records, one JSON-lines object per day of those records goes
to ``{p}/subjects/date=YYYY-MM-DD/{batch}.jsonl``, a line per record::

    {"resource": "monitors", "record_id": 17, "date": "2026-03-02",
     "keys": ["{p}/recordings/date=2026-03-02/17.mp3", "{p}/recordings/.../17.json"],
     "numbers": [{"number": "+442079460321", "field": "caller", "ambiguous": false}],
     "indexed_at": "2026-03-03T01:00:00+00:00"}

Numbers are E.164, read field by field as the purge reads them
(:func:`~voipstudio_provider.engine.subjects.phone_numbers.numbers_by_field`). A chat's line also
lists its ``message_ids``. "Everything archived about a number" is then one LIST and a
GET per index object, never one GET per sidecar, and it includes records the source no
longer has. Index objects are written without Object Lock retention: an erasure rewrites
them without the erased records, so the index never outlives the data it points at.
Objects archived before the index existed are indexed by :func:`backfill` from their
sidecars and chat archives, without reading any binary.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voipstudio_provider.engine.layout import (
    ARCHIVE_KINDS,
    ArchiveKind,
    archive_key,
    key_day,
    record_day,
    sidecar_key,
    subjects_key,
    subjects_prefix,
)
from voipstudio_provider.engine.s3objects import LOCK_ARGS, jsonl, put_checked
from voipstudio_provider.engine.subjects.phone_numbers import numbers_by_field

log = logging.getLogger(__name__)

#: Folders whose JSON sidecars the backfill reads: the record as the API sent it.
SIDECAR_KINDS = tuple(k for k in ARCHIVE_KINDS.values() if k.sidecar)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def found_numbers(
    resource: str, record: Mapping[str, Any], regions: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """``[{"number", "field", "ambiguous"}]``: each number of a record with its field."""
    return [
        {"number": found.e164, "field": name, "ambiguous": bool(found.ambiguous)}
        for name, numbers in numbers_by_field(resource, record, regions)
        for found in numbers
    ]


def record_line(
    prefix: str, kind: ArchiveKind, record: Mapping[str, Any], regions: Sequence[str] = ()
) -> dict[str, Any]:
    """The index line of one archived record of ``kind``."""
    keys = [archive_key(prefix, kind, dict(record))]
    if kind.sidecar:
        keys.append(sidecar_key(prefix, kind, dict(record)))
    return {
        "resource": kind.resource,
        "record_id": int(record["id"]),
        "date": record_day(kind.resource, dict(record)).isoformat(),
        "keys": keys,
        "numbers": found_numbers(kind.resource, record, regions),
        "indexed_at": _now(),
    }


def chat_line(key: str, document: Mapping[str, Any], regions: Sequence[str] = ()) -> dict:
    """The index line of an archived chat (``{"chat": ..., "messages": [...]}``)."""
    chat = document.get("chat") or {}
    messages = document.get("messages") or []
    numbers = found_numbers("chats", chat, regions) if chat else []
    for message in messages:
        numbers.extend(found_numbers("chatmsgs", message, regions))
    chat_id = int(key.rsplit("/", 1)[-1].split(".")[0])
    return {
        "resource": "chats",
        "record_id": chat_id,
        "date": key_day(key).isoformat(),
        "keys": [key],
        "numbers": numbers,
        "message_ids": sorted(int(m["id"]) for m in messages),
        "indexed_at": _now(),
    }


def index_write_args(target) -> dict[str, Any]:
    """The target's write arguments (encryption, tags) without Object Lock retention."""
    return {k: v for k, v in target.document_args().items() if k not in LOCK_ARGS}


def write_lines(s3_client, target, name: str, lines: Iterable[Mapping[str, Any]]) -> list[str]:
    """PUT one index object per day of ``lines``; return the keys written.

    :param name: the object's name in each day (a batch's, e.g. ``monitors-1-200-{stamp}``).
    """
    by_day: dict[str, list[Mapping[str, Any]]] = {}
    for line in lines:
        by_day.setdefault(line["date"], []).append(line)
    keys = []
    for day, day_lines in sorted(by_day.items()):
        key = subjects_key(target.prefix, dt.date.fromisoformat(day), name)
        body = jsonl(sorted(day_lines, key=lambda x: (x["resource"], x["record_id"])))
        put_checked(
            s3_client, target.bucket, key, body,
            content_type="application/x-ndjson", write_args=index_write_args(target),
        )  # fmt: skip
        keys.append(key)
    return keys


def index_batch(
    s3_client, target, kind: ArchiveKind, records: Iterable[Mapping[str, Any]], name: str,
    regions: Sequence[str] = (),
) -> list[str]:  # fmt: skip
    """Index the records an archive batch stored (or found stored): one object per day."""
    lines = [record_line(target.prefix, kind, r, regions) for r in records]
    return write_lines(s3_client, target, name, lines) if lines else []


@dataclass
class SubjectIndex:
    """The subject index as read from the bucket: one merged line per ``(resource, id)``.

    :param lines: ``{(resource, record_id): line}``; the keys of a record's lines (a CDR's
        PCAP and trace) are merged, the latest ``indexed_at`` gives the numbers.
    :param objects: ``{(resource, record_id): {index object keys naming it}}``.
    :param requests: ``LIST`` and ``GET`` requests the reading took.
    """

    lines: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    objects: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=lambda: {"LIST": 0, "GET": 0})

    @classmethod
    def read(cls, s3_client, bucket: str, prefix: str) -> SubjectIndex:
        """Read every index object below ``{p}/subjects/``."""
        index = cls()
        paginator = s3_client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=subjects_prefix(prefix)):
            index.requests["LIST"] += 1
            for obj in page.get("Contents", []):
                index.requests["GET"] += 1
                body = s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
                with body:
                    for raw in body.iter_lines():
                        if raw.strip():
                            index.add(json.loads(raw), obj["Key"])
        return index

    def add(self, line: Mapping[str, Any], source: str) -> None:
        ref = (str(line["resource"]), int(line["record_id"]))
        self.objects.setdefault(ref, set()).add(source)
        known = self.lines.get(ref)
        if known is None:
            self.lines[ref] = dict(line)
            return
        keys = list(dict.fromkeys([*known["keys"], *line["keys"]]))
        newest = line if line.get("indexed_at", "") >= known.get("indexed_at", "") else known
        self.lines[ref] = {**newest, "keys": keys}

    def of_number(self, number: str, *, exact: bool = False) -> list[dict[str, Any]]:
        """The lines of every record involving ``number`` (E.164).

        :param exact: leave out numbers whose text also reads as another number (an
            erasure takes what is that number beyond doubt; a hold keeps what might be).
        """
        return [
            line
            for _, line in sorted(self.lines.items())
            if any(
                n["number"] == number and not (exact and n.get("ambiguous"))
                for n in line["numbers"]
            )
        ]

    def of_record(self, resource: str, record_id: int) -> dict[str, Any] | None:
        """The line of one record; a chat message's is its chat's."""
        if resource == "chatmsgs":
            for (res, _), line in sorted(self.lines.items()):
                if res == "chats" and int(record_id) in line.get("message_ids", ()):
                    return line
            return None
        return self.lines.get((resource, int(record_id)))


def forget(s3_client, erasure_client, target, index: SubjectIndex, refs: Iterable) -> int:
    """Rewrite every index object naming one of ``refs`` without their lines, and remove
    every earlier version of it, so the index no longer says whose the erased records were.

    :param s3_client: reads and writes the new version.
    :param erasure_client: removes the old versions (the erasure role).
    :param refs: ``(resource, record_id)`` of the erased records.
    :return: the index objects rewritten.
    """
    refs = {(str(r), int(i)) for r, i in refs}
    touched = sorted({key for ref in refs for key in index.objects.get(ref, ())})
    for key in touched:
        body = s3_client.get_object(Bucket=target.bucket, Key=key)["Body"]
        with body:
            kept = [
                json.loads(raw)
                for raw in body.iter_lines()
                if raw.strip() and _ref(json.loads(raw)) not in refs
            ]
        versions = _versions(s3_client, target.bucket, key)
        if kept:
            put_checked(
                s3_client, target.bucket, key, jsonl(kept),
                content_type="application/x-ndjson", write_args=index_write_args(target),
            )  # fmt: skip
        for version in versions:
            erasure_client.delete_object(Bucket=target.bucket, Key=key, VersionId=version)
        if not versions and not kept:
            erasure_client.delete_object(Bucket=target.bucket, Key=key)
    for ref in refs:
        index.lines.pop(ref, None)
        index.objects.pop(ref, None)
    return len(touched)


def _ref(line: Mapping[str, Any]) -> tuple[str, int]:
    return str(line["resource"]), int(line["record_id"])


def _versions(s3_client, bucket: str, key: str) -> list[str]:
    """The version ids of ``key`` (and its delete markers); none in an unversioned bucket."""
    found = []
    paginator = s3_client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix=key):
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            if entry["Key"] == key and entry.get("VersionId") not in (None, "null"):
                found.append(entry["VersionId"])
    return found


def backfill(
    s3_client,
    target,
    regions: Sequence[str] = (),
    *,
    sidecars: bool = True,
    index: SubjectIndex | None = None,
) -> dict[str, int]:
    """Index what the index does not name yet, from sidecars and chat archives only.

    A recording's or voicemail's sidecar is the record as the API sent it; a chat archive
    holds the chat and its messages. A chat archived again since it was indexed (it
    gained messages) is indexed again. PCAPs and traces keep no record in the bucket: those
    archived before the index existed are found by their CDR's or MSDR's id and day only.

    :param sidecars: also list the recordings' and voicemail's folders (a LIST per 1,000
        keys of the whole archive); without it only chat archives are looked at.
    :param index: the index as already read; it is updated with what is indexed now.
    :return: ``indexed`` (records indexed now, one sidecar or chat read each) and
        ``index_objects_read``.
    """
    if index is None:
        index = SubjectIndex.read(s3_client, target.bucket, target.prefix)
    lines: list[dict[str, Any]] = []
    paginator = s3_client.get_paginator("list_objects_v2")
    folders = [(k, f"{target.prefix}/{k.folder}/") for k in SIDECAR_KINDS if sidecars]
    folders.append((None, f"{target.prefix}/chats/"))
    for kind, below in folders:
        for page in paginator.paginate(Bucket=target.bucket, Prefix=below):
            for obj in page.get("Contents", []):
                line = _backfill_line(s3_client, target, index, kind, obj, regions)
                if line is not None:
                    lines.append(line)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    if lines:
        for key in write_lines(s3_client, target, f"backfill-{stamp}", lines):
            day = key_day(key).isoformat()
            for line in lines:
                if line["date"] == day:
                    index.add(line, key)
    log.info("subject index backfill: %d records indexed", len(lines))
    return {"indexed": len(lines), "index_objects_read": index.requests["GET"]}


def _backfill_line(s3_client, target, index, kind, obj, regions) -> dict[str, Any] | None:
    key = obj["Key"]
    if not key.endswith(".json"):
        return None
    stem = key.rsplit("/", 1)[-1][: -len(".json")]
    if not stem.isdigit():
        return None
    resource = kind.resource if kind else "chats"
    known = index.lines.get((resource, int(stem)))
    modified = obj["LastModified"].astimezone(dt.UTC).isoformat(timespec="seconds")
    if known is not None and (kind is not None or known.get("indexed_at", "") >= modified):
        return None
    body = s3_client.get_object(Bucket=target.bucket, Key=key)["Body"]
    with body:
        document = json.loads(body.read())
    if kind is None:
        return chat_line(key, document, regions)
    return record_line(target.prefix, kind, document, regions)
