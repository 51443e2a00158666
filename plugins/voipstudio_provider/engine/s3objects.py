"""Objects the engines keep in S3 with a SHA-256: written so that S3 checks it, read back
against it, and a missing key told apart from a failing request.

Every JSON document, audit part, plan, ledger and probe goes through :func:`put_checked`:
the body's SHA-256 is sent as ``ChecksumSHA256`` (S3 refuses a body that does not match)
and kept as ``sha256`` metadata (what a reader compares the bytes it gets with).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import IO, Any

from botocore.exceptions import ClientError

#: The error codes S3 and S3-compatible servers give for a key that is not there
#: (``GetObject``: ``NoSuchKey``; ``HeadObject``: ``404``; copies: ``NotFound``).
NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound")
#: The write arguments that put an object under Object Lock; what is rewritten or
#: temporary (index objects, audit parts, intents, probes) is written without them.
LOCK_ARGS = ("ObjectLockMode", "ObjectLockRetainUntilDate", "ObjectLockLegalHoldStatus")
#: Bytes hashed at a time when the body is a file.
_CHUNK = 1024 * 1024


class ChangedObjectError(ValueError):
    """An object's bytes do not match the SHA-256 it was written with."""


def error_code(error: ClientError) -> str:
    """The ``Code`` of an S3 error answer, as text (``""`` when it has none)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def is_not_found(error: ClientError) -> bool:
    """Whether an S3 error says the key is not there (``NoSuchKey`` is one of these)."""
    return error_code(error) in NOT_FOUND_CODES


def _sha256(body: bytes | IO[bytes]) -> hashlib._Hash:
    if isinstance(body, bytes):
        return hashlib.sha256(body)
    digest = hashlib.sha256()
    body.seek(0)
    for chunk in iter(lambda: body.read(_CHUNK), b""):
        digest.update(chunk)
    body.seek(0)
    return digest


def jsonl(lines: Iterable[Mapping[str, Any]]) -> bytes:
    """JSON lines, keys sorted, one object a line, each line ending in a newline."""
    return b"".join(json.dumps(line, sort_keys=True).encode() + b"\n" for line in lines)


def put_checked(
    s3_client,
    bucket: str,
    key: str,
    body: bytes | IO[bytes],
    *,
    content_type: str,
    write_args: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
    sha256_metadata: bool = True,
) -> str:
    """PUT ``body`` with S3's own SHA-256 check and ``sha256`` metadata; return the hex digest.

    :param body: bytes, or a seekable binary file streamed from its start (and left open).
    :param write_args: the run's encryption, Object Lock, tags and storage class arguments.
    :param metadata: further metadata, after ``sha256``.
    :param sha256_metadata: keep the digest as ``sha256`` metadata (else only S3 checks it).
    """
    digest = _sha256(body)
    kept = {"sha256": digest.hexdigest()} if sha256_metadata else {}
    kept.update(metadata or {})
    s3_client.put_object(
        Bucket=bucket,
        Key=key,
        Body=body,
        ContentType=content_type,
        ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
        **({"Metadata": kept} if kept else {}),
        **write_args,
    )
    return digest.hexdigest()


def put_json(
    s3_client,
    bucket: str,
    key: str,
    document: Any,
    *,
    write_args: Mapping[str, Any],
    indent: int | None = None,
    sha256_metadata: bool = True,
) -> str:
    """Write ``document`` as JSON (keys sorted) with :func:`put_checked`; return its digest.

    :param indent: indent the JSON for a person reading it (plans, manifests, reports).
    """
    body = json.dumps(document, sort_keys=True, default=str, indent=indent).encode()
    return put_checked(
        s3_client, bucket, key, body, content_type="application/json",
        write_args=write_args, sha256_metadata=sha256_metadata,
    )  # fmt: skip


def stored_checksum(s3_client, bucket: str, key: str) -> str | None:
    """S3's ``ChecksumSHA256`` of an object (base64), or ``None`` when it keeps none."""
    head = s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    return head.get("ChecksumSHA256")


def read_checked_json(
    s3_client, bucket: str, key: str, *, s3_checksum: bool = False
) -> tuple[Any, str]:
    """The JSON document at ``key`` and its SHA-256 (hex), checked against how it was written.

    :param s3_checksum: also compare S3's own ``ChecksumSHA256``, when the bucket keeps one.
    :raises ChangedObjectError: the bytes are not the ones the digests were made of.
    :raises botocore.exceptions.ClientError: the request failed; :func:`is_not_found` tells
        a missing key.
    """
    answer = s3_client.get_object(Bucket=bucket, Key=key)
    with answer["Body"] as body:
        raw = body.read()
    digest = hashlib.sha256(raw)
    if answer.get("Metadata", {}).get("sha256") != digest.hexdigest():
        raise ChangedObjectError(f"s3://{bucket}/{key} does not match its sha256 metadata")
    if s3_checksum:
        checksum = stored_checksum(s3_client, bucket, key)
        if checksum is not None and checksum != base64.b64encode(digest.digest()).decode():
            raise ChangedObjectError(f"s3://{bucket}/{key} does not match its ChecksumSHA256")
    return json.loads(raw), digest.hexdigest()
