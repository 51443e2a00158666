"""File endpoints: what a download gives back, and writing one streamed answer into a file
object while counting and hashing it.

:meth:`VoIPstudioHook.download` and :meth:`VoIPstudioHook.export_user_cdrs_csv` send the
request and retry; the functions here check and write one answer, and say (by the
``retryable`` of their errors) whether asking again can help.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import IO, Any

import requests
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from voipstudio_provider.endpoints import bare_media_type
from voipstudio_provider.exceptions import (
    VoIPstudioIncompleteDownloadError,
    VoIPstudioUnexpectedContentError,
)
from voipstudio_provider.hooks.responses import malformed_json_error

CHUNK_SIZE = 1024 * 1024
#: A body that breaks mid-way surfaces as one of these while iterating over it.
BODY_ERRORS = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    Urllib3HTTPError,
    ConnectionError,
    TimeoutError,
)


@dataclass(frozen=True)
class DownloadResult:
    """What :meth:`VoIPstudioHook.download` wrote.

    :param size: bytes written to the file object.
    :param sha256: hex SHA-256 of those bytes.
    :param content_type: the answer's media type without parameters, e.g. ``audio/mpeg``.
    """

    size: int
    sha256: str
    content_type: str


@dataclass(frozen=True)
class ExportJob:
    """A CSV export the service accepted (``202``) and queued instead of streaming a file.

    Nothing was written: the file, when the job has run, is not delivered by this API.

    :param status_code: the answer's status, ``202``.
    :param body: the answer's JSON body as sent (``None`` when it had none).
    """

    status_code: int
    body: Any


def read_export_job(response: requests.Response, method: str, path: str) -> ExportJob:
    """The :class:`ExportJob` a ``202`` answer stands for; a body that is not JSON raises
    the retryable malformed-JSON error."""
    with response:
        try:
            body = response.json() if response.content.strip() else None
        except ValueError:
            raise malformed_json_error(method, path, response.status_code) from None
    return ExportJob(status_code=response.status_code, body=body)


def media_type(response: requests.Response) -> str:
    """The answer's media type without parameters, lower case: ``text/csv; charset=utf-8``
    gives ``text/csv``; ``""`` when the answer names none."""
    return bare_media_type(response.headers.get("Content-Type"))


def check_media_type(response: requests.Response, expected: str, label: str) -> None:
    """Refuse (and close) a successful answer that is not the endpoint's kind of file.

    A ``200`` with a JSON or HTML body where an MP3 belongs is an error page, not a
    recording; it is refused before anything is written.
    """
    received = media_type(response)
    if received == expected.lower():
        return
    response.close()
    raise VoIPstudioUnexpectedContentError(
        f"{label} answered {response.status_code} with {received or 'no media type'}, "
        f"expected {expected}",
        expected_type=expected,
        received_type=received,
        status_code=response.status_code,
    )


def _limit(
    announced: int | None, expected_size: int | None, max_size: int | None
) -> tuple[int, str] | None:
    """The fewest bytes a body may have, and what sets that limit."""
    limits = [
        (int(value), what)
        for value, what in (
            (expected_size, "the record's size"),
            (announced, "Content-Length"),
            (max_size, "the configured maximum"),
        )
        if value is not None
    ]
    return min(limits, key=lambda limit: limit[0]) if limits else None


def write_body(
    response: requests.Response,
    fileobj: IO[bytes],
    label: str,
    expected_size: int | None,
    *,
    max_size: int | None = None,
) -> DownloadResult:
    """Copy ``response``'s body into ``fileobj``; raise when it is empty, short, broken or
    too long.

    A body that would pass the record's size, its ``Content-Length`` or ``max_size`` stops
    there: no byte past the limit is written (a server that announces more than the limit
    is refused before the first byte).

    :param response: a streamed (``stream=True``) successful answer; closed on return.
    :param fileobj: a binary file object open for writing.
    :param label: ``METHOD /path`` for messages.
    :param expected_size: the byte count the record says the file has, if it says one.
    :param max_size: the most bytes this download may bring.
    """
    digest = hashlib.sha256()
    size = 0
    announced = content_length(response)
    limit = _limit(announced, expected_size, max_size)
    with response:
        if limit is not None and announced is not None and announced > limit[0]:
            raise too_long(label, announced, limit, response.status_code, announced=True)
        try:
            for chunk in response.iter_content(chunk_size=CHUNK_SIZE):
                if limit is not None and size + len(chunk) > limit[0]:
                    raise too_long(label, size + len(chunk), limit, response.status_code)
                fileobj.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        except BODY_ERRORS:
            raise VoIPstudioIncompleteDownloadError(
                f"{label}: the connection broke after {size} of "
                f"{announced if announced is not None else 'unknown'} bytes",
                received=size,
                expected=announced,
                status_code=response.status_code,
            ) from None
    if size == 0:
        # No file of the API is empty: an empty 200 is a failed answer, not a recording.
        raise VoIPstudioIncompleteDownloadError(
            f"{label}: answered {response.status_code} with an empty body",
            received=0,
            expected=expected_size if expected_size is not None else announced,
            status_code=response.status_code,
        )
    if announced is not None and size != announced:
        raise VoIPstudioIncompleteDownloadError(
            f"{label}: received {size} bytes, Content-Length announced {announced}",
            received=size,
            expected=announced,
            status_code=response.status_code,
        )
    if expected_size is not None and size != expected_size:
        raise VoIPstudioIncompleteDownloadError(
            f"{label}: received {size} bytes, the record's size is {expected_size}",
            received=size,
            expected=expected_size,
            status_code=response.status_code,
            # The server sent all it announced: asking again would give the same bytes.
            retryable=announced is None,
        )
    return DownloadResult(size=size, sha256=digest.hexdigest(), content_type=media_type(response))


def too_long(
    label: str, received: int, limit: tuple[int, str], status: int, *, announced: bool = False
) -> VoIPstudioIncompleteDownloadError:
    """The error of a body longer than it may be; asking again would bring the same body."""
    what = "announced" if announced else "at least"
    return VoIPstudioIncompleteDownloadError(
        f"{label}: the body has {what} {received} bytes, more than {limit[1]} ({limit[0]}): "
        "stopped",
        received=received,
        expected=limit[0],
        status_code=status,
        retryable=False,
    )


def is_seekable(fileobj: IO[bytes]) -> bool:
    """Whether ``fileobj`` can be rewound to retry a download into it."""
    try:
        return bool(fileobj.seekable()) and fileobj.tell() >= 0
    except (AttributeError, OSError, ValueError):
        return False


def content_length(response: requests.Response) -> int | None:
    """The announced body length, ``None`` when absent or not a number."""
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None
