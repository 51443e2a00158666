"""How many archived objects each legal hold in force locks, counted from the bucket.

A held id locks its record's archived objects: the binary and its sidecar
(``{p}/recordings/date=*/{id}.mp3`` and ``{id}.json``), or a chat's archive
(``{p}/chats/date=*/{chat_id}.json``). A held number locks every archived record whose
sidecar names it, read as the purge reads numbers (:meth:`~voipstudio_provider.engine.
policy.LegalHold.numbers_of`).

Both counts are bounded so that a page answers quickly: at most :data:`MAX_LISTED_KEYS`
keys are listed per folder and at most ``max_sidecars`` sidecars (the newest days first)
are read for the numbers. A count that reached a bound says so (``complete`` false); it is
then a lower bound, never a guess.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.engine.layout import ARCHIVE_KINDS
from voipstudio_provider.engine.subjects.legal_hold import LegalHold

#: Keys listed per folder at most.
MAX_LISTED_KEYS = 100_000
#: Sidecars read at most to find held numbers, when no number index answers.
MAX_SIDECARS = 200
#: Where each held resource's archived objects are, and the resource their sidecars are.
HELD_FOLDERS: dict[str, str] = {
    "monitors": ARCHIVE_KINDS["monitors"].folder,
    "voicemessages": ARCHIVE_KINDS["voicemessages"].folder,
    "chats": "chats",
}
#: Held resources whose records are archived inside another object (a chat's messages).
ARCHIVED_INSIDE = {"chatmsgs": "chats"}
_OBJECT = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/(\d+)\.([a-z0-9]+)$")


@dataclass
class FolderListing:
    """The keys of one archive folder, grouped by record id."""

    objects_by_id: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    listed: int = 0
    complete: bool = True

    def sidecars_newest_first(self) -> list[str]:
        keys = [k for keys in self.objects_by_id.values() for k in keys if k.endswith(".json")]
        return sorted(keys, key=lambda k: (_OBJECT.search(k).group(1), k), reverse=True)


def list_folder(s3_client, bucket: str, prefix: str, folder: str) -> FolderListing:
    """Every archived object of ``{prefix}/{folder}/`` by record id, at most
    :data:`MAX_LISTED_KEYS` keys."""
    listing = FolderListing()
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/{folder}/date="):
        for item in page.get("Contents", []):
            if listing.listed >= MAX_LISTED_KEYS:
                listing.complete = False
                return listing
            listing.listed += 1
            match = _OBJECT.search(item["Key"])
            if match:
                listing.objects_by_id[int(match.group(2))].append(item["Key"])
    return listing


def _read_sidecar(s3_client, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        with s3_client.get_object(Bucket=bucket, Key=key)["Body"] as body:
            record = json.loads(body.read())
    except (ClientError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _held_number(hold: LegalHold, resource: str, record: dict[str, Any]) -> str | None:
    """The held number a sidecar (or a chat's archive: the chat and its messages) names."""
    if resource != "chats":
        return hold.held_number(hold.numbers_of(resource, record))
    numbers = hold.numbers_of("chats", record["chat"]) if record.get("chat") else []
    for message in record.get("messages") or []:
        numbers.extend(hold.numbers_of("chatmsgs", message))
    return hold.held_number(numbers)


def hold_reach(
    s3_client, bucket: str, prefix: str, hold: LegalHold, *, max_sidecars: int = MAX_SIDECARS
) -> dict[str, Any]:
    """The holds in force and the archived objects each locks.

    :param hold: the parsed ``voipstudio_legal_hold``
        (:func:`~voipstudio_provider.engine.subjects.legal_hold.parse_legal_hold`).
    :param max_sidecars: sidecars read at most for the held numbers.
    :return: ``{"ids": [{"resource", "id", "objects", "keys"}], "numbers": [{"number",
        "records", "objects"}], "listed": n, "sidecars_read": n, "sidecars_total": n,
        "complete": bool}``.
    """
    listings: dict[str, FolderListing] = {}

    def listing(resource: str) -> FolderListing:
        if resource not in listings:
            folder = HELD_FOLDERS[resource]
            listings[resource] = list_folder(s3_client, bucket, prefix, folder)
        return listings[resource]

    ids = []
    for resource, held in sorted(hold.ids.items()):
        for record_id in sorted(held):
            if resource in HELD_FOLDERS:
                keys = sorted(listing(resource).objects_by_id.get(record_id, []))
                ids.append({"resource": resource, "id": record_id, "objects": len(keys),
                            "keys": keys[:4], "inside": None})  # fmt: skip
            else:
                ids.append({"resource": resource, "id": record_id, "objects": None, "keys": [],
                            "inside": ARCHIVED_INSIDE.get(resource)})  # fmt: skip

    records: Counter[str] = Counter()
    objects: Counter[str] = Counter()
    read = total = 0
    if hold.numbers:
        for resource in HELD_FOLDERS:
            found = listing(resource)
            sidecars = found.sidecars_newest_first()
            total += len(sidecars)
            for key in sidecars[: max(0, max_sidecars - read)]:
                read += 1
                record = _read_sidecar(s3_client, bucket, key)
                if record is None:
                    continue
                number = _held_number(hold, resource, record)
                if number is not None:
                    records[number] += 1
                    record_id = _OBJECT.search(key).group(2)
                    objects[number] += len(found.objects_by_id.get(int(record_id), [key]))
    numbers = [
        {"number": number, "records": records[number], "objects": objects[number]}
        for number in sorted(hold.numbers)
    ]
    return {
        "ids": ids,
        "numbers": numbers,
        "listed": sum(found.listed for found in listings.values()),
        "sidecars_read": read,
        "sidecars_total": total,
        "complete": all(found.complete for found in listings.values()) and read >= total,
    }
