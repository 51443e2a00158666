"""What the property tests share: the archive they delete against, and the judge.

The judge reads only the outside: the sandbox's rows and request log, and the bucket.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from voipstudio_provider.engine.evidence.audit import read_audit

#: A DELETE by ids: ``.../monitors/1,2,3`` (anything else would be a whole collection).
_BY_IDS = re.compile(r"/(monitors|voicemessages|chatmsgs)/([0-9,]+)$")


def keys_below(s3, bucket: str, prefix: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.extend(page.get("Contents", []))
    return found


def clear_audit(s3, bucket: str, prefix: str) -> None:
    """Remove every audit object, part, intent and probe (between scenarios)."""
    for obj in keys_below(s3, bucket, f"{prefix}/audit/"):
        s3.delete_object(Bucket=bucket, Key=obj["Key"])


def finished_audit_lines(s3, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every line of every finished audit object ``{p}/audit/{dag}/{run}.jsonl``."""
    lines: list[dict[str, Any]] = []
    for obj in keys_below(s3, bucket, f"{prefix}/audit/"):
        key = obj["Key"]
        rest = key[len(prefix) + len("/audit/") :]
        if rest.count("/") == 1 and key.endswith(".jsonl") and ".plan" not in key:
            lines.extend(read_audit(s3, bucket, key))
    return lines


def left_behind(s3, bucket: str, prefix: str) -> list[str]:
    """Intents, parts and leases still there (none may remain once every run is settled)."""
    return [
        o["Key"]
        for o in keys_below(s3, bucket, f"{prefix}/audit/")
        if any(f".{what}/" in o["Key"] for what in ("intents", "parts", "leases"))
    ]


def snapshot(s3, bucket: str, prefix: str) -> dict[str, tuple[str, str]]:
    """Every archived object outside the audit: key -> (ETag, LastModified)."""
    return {
        o["Key"]: (o["ETag"], str(o["LastModified"]))
        for o in keys_below(s3, bucket, f"{prefix}/")
        if not o["Key"].startswith(f"{prefix}/audit/")
    }


def delete_requests(entries: list[dict[str, Any]]) -> tuple[set[tuple[str, int]], list[str]]:
    """The ids the request log shows DELETEs for, and every DELETE path that is not by ids."""
    targeted: set[tuple[str, int]] = set()
    others: list[str] = []
    for entry in entries:
        if entry["method"] != "DELETE":
            continue
        path = unquote(entry["path"])
        match = _BY_IDS.search(path)
        if match and all(part for part in match.group(2).split(",")):
            targeted |= {(match.group(1), int(i)) for i in match.group(2).split(",")}
        else:
            others.append(path)
    return targeted, others


@dataclass
class Verdict:
    """The invariants, judged from the source's rows, its request log and the bucket."""

    lines: list[dict[str, Any]]
    targeted: set[tuple[str, int]]
    collection_deletes: list[str]
    leftovers: list[str]

    @classmethod
    def read(cls, s3, bucket: str, prefix: str, requests: list[dict]) -> Verdict:
        targeted, others = delete_requests(requests)
        return cls(
            finished_audit_lines(s3, bucket, prefix), targeted, others,
            left_behind(s3, bucket, prefix),
        )  # fmt: skip

    def deleted_lines(self) -> Counter:
        return Counter(
            (x["resource"], int(x["id"])) for x in self.lines if x["action"] == "deleted"
        )

    def check(
        self,
        resource: str,
        before: set[int],
        after: set[int],
        *,
        removed_elsewhere: set[int] = frozenset(),
        must_stay: set[int] = frozenset(),
    ) -> None:
        """Raise ``AssertionError`` naming the first invariant broken.

        :param before: the resource's ids at the start; ``after``: at the end.
        :param removed_elsewhere: ids the scenario itself deleted at the source.
        :param must_stay: ids that may never be deleted (held, unverified archive).
        """
        assert not self.collection_deletes, f"collection DELETEs sent: {self.collection_deletes}"
        assert not self.leftovers, f"intents or parts left unsettled: {self.leftovers}"
        lines = self.deleted_lines()
        twice = {k: n for k, n in lines.items() if n > 1}
        assert not twice, f"ids with more than one deleted line: {twice}: " + dump(
            [x for x in self.lines if (x["resource"], int(x["id"])) in twice]
        )
        gone = (before - after) - set(removed_elsewhere)
        ours = {i for r, i in self.targeted if r == resource}
        unaudited = sorted(i for i in gone & ours if (resource, i) not in lines)
        assert not unaudited, f"deleted by us, no deleted line in a finished audit: {unaudited}"
        untrue = sorted(i for r, i in lines if r == resource and i in after)
        assert not untrue, f"deleted lines for ids still at the source: {untrue}"
        wrongly = sorted(set(must_stay) & (before - after) - set(removed_elsewhere))
        assert not wrongly, f"deleted although held or not verifiably archived: {wrongly}"


def dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
