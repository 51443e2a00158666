"""How the API's answers and transport failures become the provider's errors: which error
class, which message (the API's own, never the token), whether trying again may help
(``retryable``) and how long the server asked to wait. What the hook then does about a
retryable error is :mod:`~voipstudio_provider.hooks.retries`."""

from __future__ import annotations

import email.utils
import http.client
import ssl
import time
from collections.abc import Iterator
from typing import Any

import requests
from urllib3.exceptions import HeaderParsingError
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.util.response import assert_header_parsing

from voipstudio_provider.exceptions import (
    VoIPstudioAccessDeniedError,
    VoIPstudioAuthenticationError,
    VoIPstudioError,
    VoIPstudioFilterError,
    VoIPstudioNotFoundError,
    VoIPstudioRateLimitedError,
    VoIPstudioServerError,
    VoIPstudioValidationError,
)

AUTHENTICATION_FAILED = "authentication failed: check the API token"
#: Longest path shown in an error message (a DELETE of many ids has a very long one).
_MAX_PATH_IN_MESSAGE = 120

_BY_STATUS: dict[int, type[VoIPstudioError]] = {
    400: VoIPstudioValidationError,
    401: VoIPstudioAuthenticationError,
    403: VoIPstudioAccessDeniedError,
    404: VoIPstudioNotFoundError,
    429: VoIPstudioRateLimitedError,
}


def request_label(method: str, path: str) -> str:
    """``METHOD /path`` for messages: never the host's credentials, never a query string."""
    if len(path) > _MAX_PATH_IN_MESSAGE:
        path = path[: _MAX_PATH_IN_MESSAGE - 3] + "..."
    return f"{method} {path}"


def api_error_details(response: requests.Response) -> tuple[str | None, list[dict[str, Any]]]:
    """The API's message (``errors[0].message``, then ``message``) and its ``errors`` list."""
    try:
        body = response.json()
    except ValueError:
        return None, []
    if not isinstance(body, dict):
        return None, []
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    message = next((str(e["message"]) for e in errors if e.get("message")), None)
    return message or (str(body["message"]) if body.get("message") else None), errors


def parse_retry_after(value: str | None, cap: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), capped.

    A malformed or negative header gives ``None``: the caller falls back to its backoff.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds or seconds < 0:  # NaN or in the past
        return None
    return min(seconds, cap)


def error_from_response(
    response: requests.Response, method: str, path: str, retry_after_cap: float
) -> VoIPstudioError:
    """The error that a non-2xx answer stands for, with the API's message and field errors."""
    label = request_label(method, path)
    unparsed = unparsed_header_line(response)
    if unparsed is not None:
        # A header line that is not a header (Node: HPE_INVALID_HEADER_TOKEN): nothing after
        # it can be trusted, so the answer counts as unreadable, like a dropped connection.
        return VoIPstudioServerError(
            f"{label}: the answer's HTTP headers could not be parsed (invalid header line "
            f"{unparsed!r})"
        )
    status = response.status_code
    api_message, errors = api_error_details(response)
    if status == 401:
        text = f"{label}: {AUTHENTICATION_FAILED}"
    else:
        text = f"{label} answered {status}"
        if api_message:
            text += f": {api_message}"
    if status == 400:
        fields = [f"{e.get('field')}: {e.get('message')}" for e in errors if e.get("field")]
        if fields:
            text += " (" + "; ".join(fields) + ")"
    kwargs: dict[str, Any] = {"status_code": status, "api_message": api_message, "errors": errors}
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), retry_after_cap)
        return VoIPstudioRateLimitedError(text, retry_after=retry_after, **kwargs)
    if status >= 500:
        return VoIPstudioServerError(text, **kwargs)
    return _BY_STATUS.get(status, VoIPstudioError)(text, **kwargs)


def error_from_transport(exc: Exception, method: str, path: str) -> VoIPstudioError:
    """The error for a request that got no complete answer (refused, timed out, cut off)."""
    label = request_label(method, path)
    if isinstance(exc, requests.exceptions.SSLError) and certificate_rejected(exc):
        # A certificate that fails verification does not fix itself between attempts.
        return VoIPstudioError(
            f"{label}: TLS error, the certificate failed verification: check it or verify_ssl"
        )
    if isinstance(exc, requests.exceptions.SSLError):
        # An EOF or reset during the TLS handshake or mid-answer is a dropped connection.
        reason = "TLS error, the connection failed or dropped"
    elif unparseable := _unparseable_answer(exc):
        # A rate-limit page with malformed headers: nothing of it can be read, but the
        # service answers normally again once the limit has passed.
        reason = f"the answer's HTTP headers could not be parsed ({unparseable})"
    elif isinstance(exc, requests.exceptions.ConnectTimeout):
        reason = "timed out while connecting"
    elif isinstance(exc, requests.exceptions.ReadTimeout | TimeoutError):
        reason = "timed out waiting for the answer"
    elif isinstance(exc, requests.exceptions.ChunkedEncodingError | Urllib3HTTPError):
        reason = "the connection broke while reading the answer"
    elif isinstance(exc, requests.exceptions.ConnectionError) and _refused(exc):
        reason = "connection refused"
    elif isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        reason = "connection failed or dropped"
    elif isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return VoIPstudioError(f"{label}: invalid base URL")
    else:
        reason = f"request failed ({type(exc).__name__})"
    return VoIPstudioServerError(f"{label}: {reason}")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception behind it: causes, contexts, ``reason`` and exception
    arguments (requests wraps urllib3's errors in its own, urllib3 wraps the ``ssl`` one)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [getattr(current, "reason", None), current.__cause__, current.__context__]
        linked += list(current.args)
        pending += [e for e in linked if isinstance(e, BaseException)]


def certificate_rejected(exc: BaseException) -> bool:
    """Whether a TLS failure is the server's certificate failing verification."""
    return any(
        isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e)
        for e in _causes(exc)
    )


def _unparseable_answer(exc: BaseException) -> str | None:
    """What http.client could not parse in an answer (``LineTooLong``, ``BadStatusLine``,
    too many headers), or ``None`` when the failure was something else."""
    for cause in _causes(exc):
        if isinstance(cause, http.client.RemoteDisconnected | http.client.IncompleteRead):
            continue  # a dropped connection or a short body, not an unreadable answer
        if isinstance(cause, http.client.LineTooLong | http.client.BadStatusLine) or (
            type(cause) is http.client.HTTPException  # "got more than 100 headers"
        ):
            detail = str(cause)
            if len(detail) > 80:
                detail = detail[:77] + "..."
            return f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__
    return None


def unparsed_header_line(response: requests.Response) -> str | None:
    """The first header line of ``response`` that could not be parsed, or ``None``.

    http.client stops reading headers at a line that is not a header and urllib3 only logs
    it; the parsed header block is kept on urllib3's ``_original_response`` (``msg``).
    """
    original = getattr(response.raw, "_original_response", None)
    headers = getattr(original, "msg", None)
    if not isinstance(headers, http.client.HTTPMessage):
        return None
    try:
        assert_header_parsing(headers)
    except HeaderParsingError:
        payload = headers.get_payload()
        line = payload.splitlines()[0] if isinstance(payload, str) and payload else "?"
        return line[:77] + "..." if len(line) > 80 else line
    return None


def _refused(exc: Exception) -> bool:
    return any(
        isinstance(e, ConnectionRefusedError) or "refused" in str(e).lower() for e in _causes(exc)
    )


def filter_error(error: VoIPstudioValidationError, sent: list[dict[str, Any]]) -> VoIPstudioError:
    """The error for a 400 to a request carrying the ``sent`` filters: names the filters the
    API's ``errors`` point at, or every filter sent when they point at nothing. A 400 that
    names only other parameters (``sort``) is not about the filters and is returned as it is."""
    named = {str(e.get("property") or e.get("field")) for e in error.errors} - {"None"}
    refused = [f for f in sent if f.get("property") in named] if named else list(sent)
    if not refused:
        return error
    listed = ", ".join(
        f"{f.get('property')} {f.get('operator')} {f.get('value')!r}" for f in refused
    )
    which = "the filter" if len(refused) == 1 else "one of the filters"
    refused_error = VoIPstudioFilterError(
        f"{error}; the service refused {which} {listed}: filtering is unavailable there, "
        "this is not an empty result",
        filters=refused,
        status_code=error.status_code,
        api_message=error.api_message,
        errors=error.errors,
    )
    refused_error.after_retry = error.after_retry
    return refused_error


def malformed_json_error(method: str, path: str, status: int) -> VoIPstudioError:
    """A 2xx answer whose body is not the JSON the API promises: retried like a 5xx."""
    return VoIPstudioError(
        f"{request_label(method, path)} answered {status} with a malformed JSON body",
        status_code=status,
        retryable=True,
    )


def scrub_token(error: VoIPstudioError, token: str) -> VoIPstudioError:
    """Replace ``token`` in ``error``'s message and API message with ``***``: the API may
    echo a header back, and the token must never leave the hook."""
    if token and token in str(error):
        error.args = (str(error).replace(token, "***"),)
    if token and error.api_message:
        error.api_message = error.api_message.replace(token, "***")
    return error
