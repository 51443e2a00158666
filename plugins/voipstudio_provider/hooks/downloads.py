"""File endpoints: downloading a file (or a user's CDRs as CSV) into a file object, what a
download gives back, and writing one streamed answer while counting and hashing it.

:class:`DownloadsMixin` gives :class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`
``download()`` and ``export_user_cdrs_csv()``: they send the request through the hook's
``_send()`` and retry it with the hook's ``_with_retries()``, rewinding a seekable file
before each try. The functions below check and write one answer, and say (by the
``retryable`` of their errors) whether asking again can help. They share a module because
what may be tried again depends on how the body was written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import requests
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from voipstudio_provider.endpoints import Endpoint, Shape, bare_media_type, endpoint
from voipstudio_provider.exceptions import (
    VoIPstudioError,
    VoIPstudioIncompleteDownloadError,
    VoIPstudioUnexpectedContentError,
)
from voipstudio_provider.hooks.paths import (
    FilterLike,
    date_filters,
    encode_json,
    encoded_query,
    filter_entries,
    path_of,
)
from voipstudio_provider.hooks.responses import malformed_json_error, request_label

T = TypeVar("T")

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


class DownloadsMixin:
    """The History API's file endpoints, for the VoIPstudio hook: each try streams one
    answer into the file object, rewound first when it can be."""

    #: The most bytes any download of this hook may bring (no limit when ``None``); a
    #: download's own ``max_size`` can only lower it.
    max_download_size: int | None = None

    def download(
        self,
        operation: str,
        record_id: int,
        fileobj: IO[bytes],
        *,
        expected_size: int | None = None,
        max_size: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> DownloadResult:
        """Stream a file endpoint into ``fileobj``, counting and hashing what is written.

        Raises :class:`VoIPstudioUnexpectedContentError` when the answer's media type is not
        the endpoint's (a JSON or HTML page instead of the file; nothing is written), and
        :class:`VoIPstudioIncompleteDownloadError` when the body is empty or the bytes
        written differ from ``Content-Length`` or ``expected_size``. Both are tried again;
        a broken body only if ``fileobj`` is seekable (it is rewound and truncated first).
        A body longer than ``expected_size``, its ``Content-Length``, ``max_size`` or the
        hook's ``max_download_size`` stops as soon as it passes the limit, before the byte
        past it is written, and is not tried again.

        ``hook.download("download_monitor_mp3", 42, f, expected_size=monitor["size"])``
        """
        ep = endpoint(operation)
        if ep.shape is not Shape.DOWNLOAD:
            raise ValueError(f"{operation} is not a file endpoint")
        limits = [m for m in (max_size, self.max_download_size) if m is not None]

        def receive(response: requests.Response, label: str) -> DownloadResult:
            check_media_type(response, ep.content_type, label)
            return write_body(
                response, fileobj, label, expected_size, max_size=min(limits, default=None)
            )

        path = path_of(ep, id=record_id)
        return self._stream(ep, path, encoded_query(params), fileobj, receive)

    def export_user_cdrs_csv(
        self,
        user_id: int,
        fileobj: IO[bytes],
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        filters: Iterable[FilterLike] | None = None,
    ) -> DownloadResult | ExportJob:
        """Ask ``/users/{id}/cdrs.csv`` for a user's CDRs; stream a CSV answer into ``fileobj``.

        The real service queues an export job and answers ``202`` with JSON: that answer is
        returned as an :class:`ExportJob` and nothing is written. A ``200`` with ``text/csv``
        is streamed like :meth:`download` (counted, hashed, checked, retried). To build a
        user's CSV that must exist, use
        :func:`voipstudio_provider.engine.exports.cdr_csv.export_user_day`, which builds it
        from ``GET /cdrs``.

        ``hook.export_user_cdrs_csv(12, f, since=day_start, until=day_end)``
        """
        ep = endpoint("export_user_cdrs_csv")
        path = path_of(ep, id=user_id)
        entries = filter_entries(filters) + date_filters("cdrs", since, until)

        def receive(response: requests.Response, label: str) -> DownloadResult | ExportJob:
            if response.status_code == 202:
                job = read_export_job(response, ep.method, path)
                self.log.info("%s: export job accepted (202), no file delivered", label)
                return job
            check_media_type(response, ep.content_type, label)
            return write_body(response, fileobj, label, None, max_size=self.max_download_size)

        params = {"filter": encode_json(entries)} if entries else {}
        return self._stream(ep, path, params, fileobj, receive, filters=entries)

    def _stream(
        self,
        ep: Endpoint,
        path: str,
        params: dict[str, Any],
        fileobj: IO[bytes],
        receive: Callable[[requests.Response, str], T],
        *,
        filters: list[dict[str, Any]] | None = None,
    ) -> T:
        """Send a streamed request and hand each answer to ``receive``, with retries.

        A seekable ``fileobj`` is rewound and truncated before every try; into one that is
        not, a broken body is not tried again (written bytes cannot be taken back).
        """
        seekable = is_seekable(fileobj)
        start = fileobj.tell() if seekable else 0
        label = request_label(ep.method, path)

        def attempt() -> T:
            if seekable:
                fileobj.seek(start)
                fileobj.truncate()
            # identity: Content-Length then counts the very bytes written to the file.
            response = self._send(
                ep.method,
                path,
                params=params,
                stream=True,
                headers={"Accept-Encoding": "identity"},
                filters=filters,
            )
            return receive(response, label)

        def may_retry(error: VoIPstudioError) -> bool:
            return seekable or not isinstance(error, VoIPstudioIncompleteDownloadError)

        return self._with_retries(label, attempt, may_retry)


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
