"""Legal holds on the archived copies themselves: S3 Object Lock legal hold ``ON``/``OFF``.

A record under ``voipstudio_legal_hold`` (by id, or by number through the
:mod:`~voipstudio_provider.engine.subjects.subject_index`) has every stored version of every
archived object of it held by S3: its binary, its sidecar, its chat archive and its
quarantined copies. S3 then refuses to delete a held version, whoever asks. Lifting the
hold turns the flags ``OFF``. Each change is one line of
``{p}/audit/legal-hold/{run_id}.jsonl`` (key, version, ``ON``/``OFF``, what it was, the
hold entry behind it, the run), and those lines are the register the next sync compares
with: a flag that differs from it is drift, reported and set right.

A bucket without Object Lock cannot enforce a hold: that is a finding, never silence. A
flag that S3 does not show the caller is ``unknown``, never ``OFF``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.engine.layout import legal_hold_audit_key, quarantine_stem
from voipstudio_provider.engine.s3objects import error_code, is_not_found, jsonl, put_checked

log = logging.getLogger(__name__)

ON, OFF, UNKNOWN = "ON", "OFF", "unknown"
#: What S3 answers for a bucket without Object Lock (AWS, and SeaweedFS alike).
NO_LOCK_CODES = ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration")
#: What S3 answers for a version that never had a legal hold: it is ``OFF``
#: (AWS: ``NoSuchObjectLockConfiguration``; SeaweedFS: ``NoSuchObjectLegalHold``).
NEVER_HELD_CODES = ("NoSuchObjectLockConfiguration", "NoSuchObjectLegalHold")
#: Where the legal-hold audit lines live, below the prefix.
AUDIT_FOLDER = "audit/legal-hold/"

Version = tuple[str, str]  # (key, version id)


def lock_enabled(s3_client, bucket: str) -> bool:
    """Whether ``bucket`` has Object Lock, so that legal holds can be set at all."""
    try:
        answer = s3_client.get_object_lock_configuration(Bucket=bucket)
    except ClientError as error:
        if error_code(error) in NO_LOCK_CODES:
            return False
        raise
    return answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"


def record_versions(s3_client, bucket: str, prefix: str, keys: Iterable[str]) -> list[Version]:
    """Every stored version of the archived objects ``keys`` and of their quarantined
    copies, as ``(key, version id)``; delete markers are not objects and are left out."""
    found: list[Version] = []
    paginator = s3_client.get_paginator("list_object_versions")
    for key in keys:
        for below, exact in ((key, True), (quarantine_stem(prefix, key), False)):
            for page in paginator.paginate(Bucket=bucket, Prefix=below):
                for version in page.get("Versions", []):
                    if exact and version["Key"] != key:
                        continue
                    found.append((version["Key"], str(version.get("VersionId") or "null")))
    return sorted(set(found))


def version_args(version_id: str) -> dict[str, str]:
    """``VersionId`` for a request, left out for an unversioned bucket's ``null``."""
    return {} if version_id in (None, "null") else {"VersionId": version_id}


def hold_status(s3_client, bucket: str, key: str, version_id: str) -> str:
    """``ON``, ``OFF`` or ``unknown``: a version's legal hold as S3 tells it.

    HEAD shows the flag only to a caller allowed ``s3:GetObjectLegalHold`` and, on AWS,
    only once a hold was ever set; without it ``GetObjectLegalHold`` decides, and an
    answer without the field (or a refusal) is ``unknown``.
    :raises botocore.exceptions.ClientError: the version is gone (:func:`is_not_found`).
    """
    head = s3_client.head_object(Bucket=bucket, Key=key, **version_args(version_id))
    status = head.get("ObjectLockLegalHoldStatus")
    if status in (ON, OFF):
        return status
    try:
        answer = s3_client.get_object_legal_hold(Bucket=bucket, Key=key, **version_args(version_id))
    except ClientError as error:
        if error_code(error) in NEVER_HELD_CODES:
            return OFF
        if error_code(error) in ("AccessDenied", "403"):
            return UNKNOWN
        raise
    status = answer.get("LegalHold", {}).get("Status")
    return status if status in (ON, OFF) else UNKNOWN


def set_hold(s3_client, bucket: str, key: str, version_id: str, status: str) -> None:
    """Turn a version's legal hold ``ON`` or ``OFF``."""
    s3_client.put_object_legal_hold(
        Bucket=bucket, Key=key, LegalHold={"Status": status}, **version_args(version_id)
    )


def held_records(hold, index) -> dict[tuple[str, int], str]:
    """``{(resource, record_id): hold entry}`` for every indexed record the hold names.

    :param hold: the :class:`~voipstudio_provider.engine.subjects.legal_hold.LegalHold`.
    :param index: the :class:`~voipstudio_provider.engine.subjects.subject_index.SubjectIndex`.
    :return: the entry is ``ids.<resource>:<id>`` or ``numbers:<E.164>``; a chat is held
        by its own id, a message's id, or a held number in it.
    """
    held: dict[tuple[str, int], str] = {}
    for (resource, record_id), line in sorted(index.lines.items()):
        entry = None
        if hold.held_id(resource, record_id):
            entry = f"ids.{resource}:{record_id}"
        elif resource == "chats":
            message = next(
                (m for m in line.get("message_ids", ()) if hold.held_id("chatmsgs", m)), None
            )
            entry = f"ids.chatmsgs:{message}" if message is not None else None
        if entry is None:
            number = next(
                (n["number"] for n in line["numbers"] if n["number"] in hold.numbers), None
            )
            entry = f"numbers:{number}" if number else None
        if entry is not None:
            held[(resource, record_id)] = entry
    return held


def register(s3_client, bucket: str, prefix: str) -> dict[Version, dict[str, Any]]:
    """The latest legal-hold audit line of every version the syncs have touched."""
    latest: dict[Version, dict[str, Any]] = {}
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/{AUDIT_FOLDER}"):
        for obj in page.get("Contents", []):
            body = s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
            with body:
                for raw in body.iter_lines():
                    if raw.strip():
                        line = json.loads(raw)
                        version = (line["key"], line["version_id"])
                        if line["at"] >= latest.get(version, {}).get("at", ""):
                            latest[version] = line
    return latest


def needs_changes(s3_client, target, hold) -> bool:
    """Whether a sync may have to change a flag: the hold names something, or the
    register still has a version ``ON`` that may have to be released."""
    if hold.numbers or any(hold.ids.values()):
        return True
    return any(
        line["legal_hold"] == ON
        for line in register(s3_client, target.bucket, target.prefix).values()
    )


def sync_holds(s3_client, target, hold, index, run_id: str, *, hold_client=None) -> dict[str, Any]:
    """Make every archived copy's legal hold match the register, and audit each change.

    :param target: the archive (``bucket``, ``prefix``, write options for the audit).
    :param hold: the legal hold Variable, parsed.
    :param index: the subject index, read.
    :param run_id: the run, named in each audit line.
    :param hold_client: sets and lifts the flags and writes their audit (the legal-hold
        role); ``s3_client`` only reads. Default: ``s3_client`` does both.
    :return: ``lock_enabled``, ``findings`` (sentences for people), ``held_records``,
        ``held_objects``, ``set_on``, ``set_off``, ``drift`` and ``unknown`` (versions),
        ``not_indexed`` (held ids the subject index does not name).
    """
    writer = hold_client or s3_client
    held = held_records(hold, index)
    report: dict[str, Any] = {
        "lock_enabled": lock_enabled(s3_client, target.bucket),
        "findings": [], "held_records": len(held), "held_objects": 0,
        "set_on": 0, "set_off": 0, "drift": [], "unknown": [], "not_indexed": [],
        "audit_key": None,
    }  # fmt: skip
    if not report["lock_enabled"] and not (hold.numbers or any(hold.ids.values())):
        log.warning("s3://%s has no Object Lock: a legal hold could not be enforced", target.bucket)
        return report
    if not report["lock_enabled"]:
        finding = (
            f"holds cannot be enforced in this bucket: s3://{target.bucket} has no Object "
            f"Lock, so the archived copies of {len(held)} held records can be deleted"
        )
        log.error("%s", finding)
        report["findings"].append(finding)
        return report
    wanted: dict[Version, tuple[tuple[str, int], str]] = {}
    for ref, entry in held.items():
        for version in record_versions(
            s3_client, target.bucket, target.prefix, index.lines[ref]["keys"]
        ):
            wanted[version] = (ref, entry)
    report["held_objects"] = len(wanted)
    # A held id the index does not name has copies the sync cannot find: say so.
    report["not_indexed"] = sorted(
        f"ids.{resource}:{record_id}"
        for resource, ids in hold.ids.items()
        for record_id in ids
        if index.of_record(resource, record_id) is None
    )
    if report["not_indexed"]:
        log.warning(
            "%d held ids are not in the subject index (archived before it, or never "
            "archived): run the reconciliation with backfill_index",
            len(report["not_indexed"]),
        )
    known = register(s3_client, target.bucket, target.prefix)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
    lines = []

    def change(version: Version, status: str, was: str, ref, entry: str, why: str) -> None:
        set_hold(writer, target.bucket, *version, status)
        lines.append({
            "at": now, "key": version[0], "version_id": version[1], "action": "legal_hold",
            "legal_hold": status, "was": was, "resource": ref[0], "record_id": ref[1],
            "hold_entry": entry, "reason": why, "run_id": run_id,
        })  # fmt: skip
        report["set_on" if status == ON else "set_off"] += 1

    for version, (ref, entry) in sorted(wanted.items()):
        status = hold_status(s3_client, target.bucket, *version)
        if status == ON:
            continue
        drifted = known.get(version, {}).get("legal_hold") == ON
        if drifted:
            report["drift"].append({"key": version[0], "version_id": version[1], "found": status})
        if status == UNKNOWN:
            report["unknown"].append({"key": version[0], "version_id": version[1]})
        change(version, ON, status, ref, entry, "drift" if drifted else "held")
    for version, line in sorted(known.items()):
        if line["legal_hold"] != ON or version in wanted:
            continue
        try:
            status = hold_status(s3_client, target.bucket, *version)
        except ClientError as error:
            if is_not_found(error):
                continue  # the version is gone: nothing left to release
            raise
        ref = (line["resource"], line["record_id"])
        change(version, OFF, status, ref, line["hold_entry"], "lifted")
    if lines:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        key = legal_hold_audit_key(target.prefix, f"{run_id}.{stamp}")
        put_checked(
            writer, target.bucket, key, jsonl(lines),
            content_type="application/x-ndjson", write_args=_audit_args(target),
        )  # fmt: skip
        report["audit_key"] = key
    if report["drift"]:
        log.warning("legal hold drift on %d archived objects, set right", len(report["drift"]))
    return report


def _audit_args(target) -> Mapping[str, Any]:
    return target.document_args()
