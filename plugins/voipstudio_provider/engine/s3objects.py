"""Objects the engines keep in S3 with a SHA-256: written so that S3 checks it, read back
against it, and a missing key told apart from a failing request.

Every JSON document, audit part, plan, ledger and probe goes through :func:`put_checked`:
the body's SHA-256 is sent as ``ChecksumSHA256`` (S3 refuses a body that does not match)
and kept as ``sha256`` metadata (what a reader compares the bytes it gets with).
"""

from __future__ import annotations

from botocore.exceptions import ClientError

#: The error codes S3 and S3-compatible servers give for a key that is not there
#: (``GetObject``: ``NoSuchKey``; ``HeadObject``: ``404``; copies: ``NotFound``).
NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound")


def error_code(error: ClientError) -> str:
    """The ``Code`` of an S3 error answer, as text (``""`` when it has none)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def is_not_found(error: ClientError) -> bool:
    """Whether an S3 error says the key is not there (``NoSuchKey`` is one of these)."""
    return error_code(error) in NOT_FOUND_CODES
