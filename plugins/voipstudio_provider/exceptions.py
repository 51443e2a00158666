"""Errors the VoIPstudio hook raises, one class per kind of answer.

Every error keeps the HTTP status, the API's own message and its per-field ``errors`` list,
and says whether trying again may help (``retryable``). None carries the API token.
"""

from __future__ import annotations

from typing import Any


class VoIPstudioError(Exception):
    """Base class of every error the VoIPstudio provider raises about the API.

    :param message: what went wrong, with the method and path of the request.
    :param status_code: the HTTP status, ``None`` when no answer came back.
    :param api_message: the API's own message (``errors[0].message`` or ``message``).
    :param errors: the API's ``errors`` list, as sent.
    :param retryable: whether the same request may succeed later.

    :attr:`after_retry` is ``True`` when the error was raised by a retried request: an
    earlier attempt may have taken effect (a delete that went through but whose answer was
    lost, then answered 404 on the retry).
    """

    default_retryable = False
    #: Raised by a retried request; an earlier attempt may have taken effect.
    after_retry: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        api_message: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.api_message = api_message
        self.errors = list(errors or [])
        self.retryable = self.default_retryable if retryable is None else retryable

    def __reduce__(self):
        # Keep every attribute when the error crosses a process boundary (pickled).
        return (_rebuild, (type(self), str(self)), dict(self.__dict__))


def _rebuild(cls: type[VoIPstudioError], message: str) -> VoIPstudioError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


class VoIPstudioAuthenticationError(VoIPstudioError):
    """401: the token is missing, wrong or expired."""


class VoIPstudioAccessDeniedError(VoIPstudioError):
    """403: the token's user may not see or change this record."""


class VoIPstudioNotFoundError(VoIPstudioError):
    """404: no such record (or no such path under the base URL)."""


class VoIPstudioValidationError(VoIPstudioError):
    """400: the request was refused; :attr:`field_messages` says why, field by field."""

    @property
    def field_messages(self) -> dict[str, str]:
        """``{field: message}`` from the API's ``errors`` entries that name a field."""
        messages: dict[str, str] = {}
        for error in self.errors:
            name = error.get("field") or error.get("property") or error.get("path")
            if name and error.get("message"):
                messages[str(name)] = str(error["message"])
        return messages


class VoIPstudioFilterError(VoIPstudioValidationError):
    """400 to a request with a ``filter``: the service cannot filter on these properties.

    A filter the service refuses ("Filtration error") is unavailable, never an empty result;
    the message names the filters, and :attr:`filters` holds them as sent.

    :param filters: the refused ``{"property", "operator", "value"}`` entries: those the
        API's ``errors`` name, or every filter of the request when it names none.
    """

    def __init__(self, message: str, *, filters: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.filters = list(filters)

    @property
    def properties(self) -> list[str]:
        """The names of the refused filters' properties."""
        return list(dict.fromkeys(str(f.get("property")) for f in self.filters))


class VoIPstudioRateLimitedError(VoIPstudioError):
    """429: too many requests; :attr:`retry_after` is the server's wait in seconds, if any."""

    default_retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class VoIPstudioServerError(VoIPstudioError):
    """5xx, a dropped connection, a timeout or a broken body: the service may recover."""

    default_retryable = True


class VoIPstudioIncompleteDownloadError(VoIPstudioError):
    """A file arrived with fewer (or more) bytes than announced or expected.

    :param received: the bytes written before the body ended.
    :param expected: the bytes announced by ``Content-Length`` or the record's size.
    """

    default_retryable = True

    def __init__(
        self,
        message: str,
        *,
        received: int | None = None,
        expected: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.received = received
        self.expected = expected


class VoIPstudioUnexpectedContentError(VoIPstudioError):
    """A successful answer whose body is not what the endpoint serves.

    A ``200`` carrying JSON or an HTML page where an MP3 belongs (a rate-limit or error page
    from a proxy) is refused before a byte is written; trying again may give the file.

    :param expected_type: the endpoint's media type, e.g. ``audio/mpeg``.
    :param received_type: the answer's media type, ``""`` when it sent none.
    """

    default_retryable = True

    def __init__(
        self,
        message: str,
        *,
        expected_type: str | None = None,
        received_type: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.expected_type = expected_type
        self.received_type = received_type


__all__ = [
    "VoIPstudioAccessDeniedError",
    "VoIPstudioAuthenticationError",
    "VoIPstudioError",
    "VoIPstudioFilterError",
    "VoIPstudioIncompleteDownloadError",
    "VoIPstudioNotFoundError",
    "VoIPstudioRateLimitedError",
    "VoIPstudioServerError",
    "VoIPstudioUnexpectedContentError",
    "VoIPstudioValidationError",
]
