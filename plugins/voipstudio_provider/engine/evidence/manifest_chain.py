"""Whether the archive's manifests hold, checked with nothing but S3 reads.

:func:`verify` recomputes each day's chain (every version's ``.jsonl`` digest, the version
it supersedes, the previous day it names) and, with ``objects``, compares every object's
size and S3 ``ChecksumSHA256`` with its manifest line and looks for objects of the day
that no manifest lists. A tombstone (an erased object's line) must carry the SHA-256 of the
line it replaced in the version before, and with ``objects`` its key must be gone. The
``voipstudio_reconcile`` DAG, the Archive page and the auditor's command
(:mod:`voipstudio_provider.verify_manifest`) all run it.
"""

from __future__ import annotations

import datetime as dt
import json

from voipstudio_provider.engine.evidence.manifests import (
    is_tombstone,
    manifest_index,
    read_bytes,
    sha256_hex,
)

#: The folders whose binaries a day's manifest lists (sidecars are copies of the record).
BINARY_FOLDERS = {
    "recordings": ".mp3",
    "voicemail": ".mp3",
    "pcaps/cdrs": (".pcap", ".trace"),
    "pcaps/msdrs": (".pcap", ".trace"),
}


def _check_version(s3_client, bucket, day, version, key, manifest, body, previous_version):
    problems = []
    where = f"{day} {key}"
    if manifest.get("day") != day.isoformat() or manifest.get("version") != version:
        problems.append(
            f"{where}: names day {manifest.get('day')} version {manifest.get('version')}"
        )
    lines_key = manifest.get("jsonl", {}).get("key")
    lines = read_bytes(s3_client, bucket, lines_key) if lines_key else None
    if lines is None:
        problems.append(f"{where}: its object list {lines_key} is missing")
    elif sha256_hex(lines) != manifest["jsonl"].get("sha256"):
        problems.append(f"{where}: {lines_key} changed (SHA-256 differs from the manifest)")
    elif len(lines.splitlines()) != manifest.get("objects"):
        problems.append(
            f"{where}: {lines_key} lists {len(lines.splitlines())} objects, "
            f"not {manifest.get('objects')}"
        )
    supersedes = manifest.get("supersedes")
    if previous_version is None and supersedes is not None:
        problems.append(f"{where}: supersedes {supersedes.get('key')}, which is missing")
    if previous_version is not None:
        prev_key, prev_body = previous_version
        if not supersedes or supersedes.get("key") != prev_key:
            problems.append(f"{where}: does not name {prev_key} as the version it supersedes")
        elif supersedes.get("sha256") != sha256_hex(prev_body):
            problems.append(f"{where}: {prev_key} changed since it was superseded")
    before = manifest.get("previous")
    if before:
        prev_body = read_bytes(s3_client, bucket, before.get("key", ""))
        if prev_body is None:
            problems.append(f"{where}: the previous manifest {before.get('key')} is missing")
        elif sha256_hex(prev_body) != before.get("sha256"):
            problems.append(f"{where}: the previous manifest {before.get('key')} changed")
    return problems, lines


def _by_key(lines: bytes | None) -> dict[str, tuple[bytes, dict]]:
    found = {}
    for raw in (lines or b"").splitlines():
        line = json.loads(raw)
        found[line["key"]] = (raw + b"\n", line)
    return found


def _check_tombstones(day, key, lines: bytes | None, earlier: bytes | None) -> list[str]:
    """Each tombstone names the digest of the line it replaced (when the version before
    still listed it), and a tombstone never comes back to life."""
    problems = []
    before = _by_key(earlier)
    for object_key, (_, line) in sorted(_by_key(lines).items()):
        raw, old = before.get(object_key, (None, None))
        if old is None:
            continue
        if is_tombstone(line) and not is_tombstone(old):
            if sha256_hex(raw) != line["tombstone"].get("line_sha256"):
                problems.append(
                    f"{day} {key}: the tombstone of {object_key} does not match the removed line"
                )
        elif is_tombstone(old) and not is_tombstone(line):
            problems.append(f"{day} {key}: {object_key} was erased but is listed again")
    return problems


def _check_objects(s3_client, bucket, prefix, day, lines: bytes) -> tuple[list[str], int]:
    problems = []
    listed = {}
    for raw in lines.splitlines():
        line = json.loads(raw)
        listed[line["key"]] = line
    for key, line in sorted(listed.items()):
        try:
            head = s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except s3_client.exceptions.ClientError as error:
            if is_tombstone(line):
                continue  # erased, as its tombstone says

            problems.append(f"{day} {key}: missing ({error.response.get('Error', {}).get('Code')})")
            continue
        if is_tombstone(line):
            problems.append(f"{day} {key}: erased by its tombstone, but still in the bucket")
            continue
        if int(head["ContentLength"]) != line["size"]:
            problems.append(f"{day} {key}: size {head['ContentLength']} != manifest {line['size']}")
        elif head.get("ChecksumSHA256") != line["s3_checksum"]:
            problems.append(
                f"{day} {key}: S3 checksum {head.get('ChecksumSHA256')} "
                f"!= manifest {line['s3_checksum']}"
            )
    paginator = s3_client.get_paginator("list_objects_v2")
    for folder, suffixes in BINARY_FOLDERS.items():
        below = f"{prefix}/{folder}/date={day.isoformat()}/"
        for page in paginator.paginate(Bucket=bucket, Prefix=below):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(suffixes) and obj["Key"] not in listed:
                    problems.append(f"{day} {obj['Key']}: in the bucket but in no manifest")
    return problems, len(listed)


def verify(
    s3_client, bucket: str, prefix: str, first: dt.date, last: dt.date, *, objects: bool = False
) -> dict:
    """Check the manifests of ``first`` .. ``last`` (inclusive).

    :return: ``{"problems": [...], "days": n, "manifests": n, "objects": n}``; the chain
        holds when ``problems`` is empty.
    """
    index = manifest_index(s3_client, bucket, prefix)
    problems: list[str] = []
    checked = {"days": 0, "manifests": 0, "objects": 0}
    day = first
    while day <= last:
        checked["days"] += 1
        versions = index.get(day, [])
        if not versions:
            problems.append(f"{day}: no manifest")
        previous_version = None
        latest_lines = None
        for number, (version, key) in enumerate(versions, start=1):
            body = read_bytes(s3_client, bucket, key)
            if version != number:
                problems.append(f"{day}: version {number} is missing")
            try:
                manifest = json.loads(body)
            except ValueError:
                problems.append(f"{day} {key}: not valid JSON")
                previous_version = (key, body)
                continue
            earlier_lines = latest_lines
            found, latest_lines = _check_version(
                s3_client, bucket, day, version, key, manifest, body, previous_version
            )
            problems.extend(found)
            problems.extend(_check_tombstones(day, key, latest_lines, earlier_lines))
            checked["manifests"] += 1
            previous_version = (key, body)
        if objects and latest_lines is not None:
            found, count = _check_objects(s3_client, bucket, prefix, day, latest_lines)
            problems.extend(found)
            checked["objects"] += count
        day += dt.timedelta(days=1)
    return {"problems": problems, **checked}
