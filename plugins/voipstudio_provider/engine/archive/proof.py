"""What proves that an archived binary holds the bytes the API served, for that very record.

:func:`verify_archive` decides on S3's own SHA-256 checksum of the stored object, computed
by S3 when the object was uploaded, compared with the checksum the archiver computed from
the bytes the API served and recorded in the sidecar (README, "Verification"). Metadata
that anyone with write access can copy never decides on its own. The sidecar must also
describe the record it is checked against (id, date, numbers, duration, size, live id).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.endpoints import RESOURCES, bare_media_type
from voipstudio_provider.engine.archive.targets import ARCHIVE_STORAGE_CLASSES, ArchiveTarget
from voipstudio_provider.engine.layout import ArchiveKind, archive_key, sidecar_key
from voipstudio_provider.engine.s3objects import error_code, is_not_found

#: Every reason for an archive that could not be checked starts with this word.
UNVERIFIABLE = "unverifiable"
#: ``verify_archive`` modes: S3's stored checksum, or reading the object back.
VERIFY_MODES = ("checksum", "download")
#: Metadata of binaries without a sidecar: the checksum S3 reports and the part size.
CHECKSUM_METADATA, PART_SIZE_METADATA = "checksum-sha256", "part-size"
_READ_CHUNK = 1024 * 1024
#: Keys asked for per listing page. Every archived recording has two keys (binary and
#: sidecar); AWS S3 answers at most 1,000 keys a page whatever is asked, servers such as
#: SeaweedFS answer as many as asked, so a re-run lists a folder in fewer requests.
LISTING_PAGE_KEYS = 10_000


@dataclass(frozen=True)
class Verification:
    """The answer of :func:`verify_archive`.

    :param ok: the archive of this record is complete and proven.
    :param reason: ``verified``, or what is wrong, in words for an audit line; it starts
        with ``unverifiable`` when the archive could not be checked (no stored checksum,
        or an object that cannot be read now), which is never ``ok``.
    :param key: the binary's key that was checked.
    :param size: the stored object's byte count, if it exists.
    :param sha256: the stored object's ``sha256`` metadata, if present.
    :param s3_checksum: the ``ChecksumSHA256`` S3 reports for the stored object.
    :param etag: the stored object's ETag.
    """

    ok: bool
    reason: str
    key: str
    size: int | None = None
    sha256: str | None = None
    s3_checksum: str | None = None
    etag: str | None = None

    @property
    def unverifiable(self) -> bool:
        """The archive could not be checked (as opposed to checked and found wrong)."""
        return self.reason.startswith(UNVERIFIABLE)

    @property
    def exists(self) -> bool:
        """Something is stored at the binary's key."""
        return self.size is not None


def checksum_of(sha256_hex: str) -> str:
    """The ``ChecksumSHA256`` S3 reports for an object stored in one PUT."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def composite_checksum(part_digests: Iterable[bytes]) -> str:
    """The ``ChecksumSHA256`` S3 reports for a multipart object: ``base64(sha256(the
    parts' SHA-256 digests, concatenated))-N``."""
    digests = list(part_digests)
    combined = hashlib.sha256(b"".join(digests)).digest()
    return f"{base64.b64encode(combined).decode()}-{len(digests)}"


def _archived_away(answer: dict[str, Any]) -> bool:
    """An answer about an object in GLACIER/DEEP_ARCHIVE that has not been restored: S3
    refuses to read it (``InvalidObjectState``), whatever a local server does."""
    if answer.get("StorageClass") not in ARCHIVE_STORAGE_CLASSES:
        return False
    return 'ongoing-request="false"' not in str(answer.get("Restore") or "")


class _Unreadable(Exception):
    """The object exists but cannot be read now."""


def _get(s3_client, bucket: str, key: str) -> dict | None:
    try:
        answer = s3_client.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if is_not_found(error):
            return None
        if error_code(error) == "InvalidObjectState":
            raise _Unreadable(error.response.get("StorageClass") or "archive class") from None
        raise
    if _archived_away(answer):
        answer["Body"].close()
        raise _Unreadable(answer["StorageClass"])
    return answer


def _digest_of_object(answer: dict) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with answer["Body"] as body:
        for chunk in iter(lambda: body.read(_READ_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _absent(value: Any) -> bool:
    return value is None or value == ""


def same_value(api_value: Any, stored_value: Any) -> bool:
    """Equal as the API means them: ``5`` and ``"5"`` are one value, and so are ``5`` and
    ``5.0``; a field absent (or null) on both sides is equal."""
    if _absent(api_value) or _absent(stored_value):
        return _absent(api_value) and _absent(stored_value)
    if api_value == stored_value:
        return True
    left, right = str(api_value).strip(), str(stored_value).strip()
    if left == right:
        return True
    try:
        return float(left) == float(right)
    except ValueError:
        return False


def identity_fields(resource: str) -> tuple[str, ...]:
    """The fields a sidecar must share with the record it is checked against."""
    spec = RESOURCES[resource]
    fields = ["id", spec.date_field, *spec.number_fields, "duration", "size", "live_id"]
    return tuple(dict.fromkeys(f for f in fields if f))


def identity_mismatch(resource: str, record: dict, sidecar: dict) -> str | None:
    """The first field on which ``sidecar`` describes another record than ``record``.

    ``size`` is compared only when the record has one (voicemail records carry none; their
    sidecar's ``size`` is the byte count).
    """
    for field in identity_fields(resource):
        if field == "size" and _absent(record.get("size")):
            continue
        if not same_value(record.get(field), sidecar.get(field)):
            return f"sidecar {field} {sidecar.get(field)!r} != record {field} {record.get(field)!r}"
    return None


def expected_checksum(recorded: dict) -> tuple[str | None, str]:
    """The ``ChecksumSHA256`` the archiver recorded, and where it came from.

    ``recorded`` is a sidecar (``checksum_sha256``, ``part_size``, ``sha256``) or, for
    kinds without one, the object's metadata (``checksum-sha256``, ``sha256``). A digest
    recorded without a part size is that of one PUT.
    """
    checksum = recorded.get("checksum_sha256") or recorded.get(CHECKSUM_METADATA)
    if checksum:
        return str(checksum), "recorded checksum"
    sha256 = recorded.get("sha256")
    if sha256 and not (recorded.get("part_size") or recorded.get(PART_SIZE_METADATA)):
        try:
            return checksum_of(str(sha256)), "recorded sha256"
        except ValueError:
            return None, "recorded sha256 is not hex"
    return None, "no checksum recorded"


def verify_archive(
    s3_client,
    kind: ArchiveKind,
    record: dict,
    target: ArchiveTarget,
    *,
    verify: str = "checksum",
) -> Verification:
    """Prove that ``record`` is completely archived: the stored bytes are the bytes the API
    served, and the sidecar describes this record.

    :param s3_client: a boto3 S3 client.
    :param kind: what kind of binary the record has.
    :param record: the API record (its id and date field place the key).
    :param target: the bucket and prefix to look in.
    :param verify: ``checksum`` (default): S3's stored ``ChecksumSHA256`` must equal the
        checksum recorded at archiving; ``download``: read the object back and hash it,
        for storage that keeps no checksums.
    :return: ``ok`` with reason ``verified``, or the first thing found wrong; an archive
        that cannot be checked is not ok and its reason starts with ``unverifiable``.
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")
    key = archive_key(target.prefix, kind, record)
    try:
        head = s3_client.head_object(Bucket=target.bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as error:
        if is_not_found(error):
            return Verification(False, "missing", key)
        raise
    size = int(head["ContentLength"])
    metadata = head.get("Metadata") or {}
    sha256 = metadata.get("sha256")
    reported = head.get("ChecksumSHA256")

    def answer(ok: bool, reason: str) -> Verification:
        return Verification(ok, reason, key, size, sha256, reported, head.get("ETag"))

    if size == 0:
        return answer(False, "empty object")
    # An error page stored as a recording has the right digest of the wrong thing.
    content_type = bare_media_type(head.get("ContentType"))
    if content_type != bare_media_type(kind.content_type):
        return answer(False, f"content type {content_type or 'missing'} is not {kind.content_type}")
    if not _absent(record.get("size")) and size != int(record["size"]):
        return answer(False, f"size {size} != record size {int(record['size'])}")

    if kind.sidecar:
        side_key = sidecar_key(target.prefix, kind, record)
        try:
            stored = _get(s3_client, target.bucket, side_key)
            recorded = None if stored is None else json.loads(stored["Body"].read())
        except _Unreadable as unreadable:
            return answer(
                False, f"{UNVERIFIABLE}: the sidecar is in {unreadable} and cannot be read now"
            )
        except ValueError:
            return answer(False, "sidecar is not valid JSON")
        if recorded is None:
            return answer(False, "sidecar missing")
        if not isinstance(recorded, dict):
            return answer(False, "sidecar is not a JSON object")
        mismatch = identity_mismatch(kind.resource, record, recorded)
        if mismatch:
            return answer(False, mismatch)
        if not same_value(recorded.get("size"), size):
            return answer(False, f"size {size} != sidecar size {recorded.get('size')}")
        if sha256 and recorded.get("sha256") != sha256:
            return answer(False, "sha256 metadata differs from sidecar")
    else:
        # No sidecar: the digests the archiver put into the object's metadata at upload.
        recorded = metadata

    if verify == "download":
        return _verify_by_reading(s3_client, target.bucket, key, recorded, answer)

    expected, source = expected_checksum(recorded)
    if not reported:
        return answer(False, f"{UNVERIFIABLE}: the bucket reports no SHA-256 checksum")
    if expected is None:
        return answer(False, f"{UNVERIFIABLE}: {source} to compare S3's checksum with")
    if reported != expected and not _whole_body(reported, recorded):
        return answer(False, f"S3 checksum {reported} != {expected} ({source})")
    return answer(True, "verified")


def _whole_body(reported: str, recorded: dict) -> bool:
    """Whether S3's checksum is the full-object SHA-256 of the recorded digest: what AWS
    reports for a multipart object once the copy that labels it is made, when the copy's
    answer did not say so. S3 computed it from the stored bytes, so it proves them too."""
    sha256 = recorded.get("sha256")
    try:
        return bool(sha256) and reported == checksum_of(str(sha256))
    except ValueError:
        return False


def _verify_by_reading(s3_client, bucket: str, key: str, recorded: dict, answer) -> Verification:
    digest = recorded.get("sha256")
    if not digest:
        return answer(False, f"{UNVERIFIABLE}: no sha256 recorded to compare the bytes with")
    try:
        stored = _get(s3_client, bucket, key)
    except _Unreadable as unreadable:
        why = f"the object is in {unreadable} and cannot be read now"
        return answer(False, f"{UNVERIFIABLE}: {why}")
    if stored is None:
        return answer(False, "missing")
    read_size, read_digest = _digest_of_object(stored)
    if read_digest != digest:
        return answer(False, f"sha256 of the stored bytes {read_digest} != recorded {digest}")
    if not same_value(recorded.get("size", read_size), read_size):
        return answer(False, f"read {read_size} bytes, recorded size {recorded.get('size')}")
    return answer(True, "verified")


class ArchiveListing:
    """What a date folder of the bucket holds, from one ``ListObjectsV2`` walk per folder.

    It decides whether archiving may skip a record without a request of its own. It is no
    proof: deleting at the source always goes through :func:`verify_archive`.

    :param s3_client: a boto3 S3 client.
    :param bucket: the archive bucket.
    """

    def __init__(self, s3_client, bucket: str) -> None:
        self.s3_client = s3_client
        self.bucket = bucket
        self._folders: dict[str, dict[str, dict]] = {}
        self._lock = threading.Lock()
        self.requests = 0

    def _folder(self, folder: str) -> dict[str, dict]:
        with self._lock:
            if folder not in self._folders:
                objects: dict[str, dict] = {}
                pages = self.s3_client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket,
                    Prefix=folder,
                    PaginationConfig={"PageSize": LISTING_PAGE_KEYS},
                )
                for page in pages:
                    self.requests += 1
                    objects.update({o["Key"]: o for o in page.get("Contents", [])})
                self._folders[folder] = objects
            return self._folders[folder]

    def decide(self, kind: ArchiveKind, prefix: str, record: dict) -> str | None:
        """``archived``, ``missing``, or ``None`` when only a HEAD can tell.

        ``archived`` needs the binary and its sidecar listed, the binary of the record's
        ``size`` (when it has one), and the sidecar written after the binary: the archiver
        writes the sidecar last, once the upload was checked, so a binary written after its
        sidecar was replaced by someone else and is verified in full.
        """
        key = archive_key(prefix, kind, record)
        objects = self._folder(key.rsplit("/", 1)[0] + "/")
        binary = objects.get(key)
        sidecar = objects.get(sidecar_key(prefix, kind, record)) if kind.sidecar else None
        if binary is None and sidecar is None:
            return "missing"
        if binary is None or sidecar is None or not binary["Size"]:
            return None
        if not _absent(record.get("size")) and binary["Size"] != int(record["size"]):
            return None
        if sidecar["LastModified"] < binary["LastModified"]:
            return None
        return "archived"

    def listed(self, key: str) -> dict | None:
        """The listing's entry of ``key`` (its folder must have been listed)."""
        return self._folders.get(key.rsplit("/", 1)[0] + "/", {}).get(key)
