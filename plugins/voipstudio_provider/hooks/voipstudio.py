"""The VoIPstudio hook: one authenticated HTTP session for every endpoint of the History API.

Paths come from :mod:`voipstudio_provider.endpoints`; no other module of the provider builds
a URL. The hook reuses one ``requests.Session``, puts an explicit timeout on every request,
streams downloads while hashing them, and retries what may succeed later.

:class:`VoIPstudioHook` owns what belongs to the connection: the session, the credentials,
the timeouts and page size read from its extras, and the checks of that connection
(:meth:`~VoIPstudioHook.ping`, :meth:`~VoIPstudioHook.me`,
:meth:`~VoIPstudioHook.test_connection`). The API calls come from mixins, one per concern:

- :mod:`~voipstudio_provider.hooks.transport`: the request loop, retries, ``run()`` and
  ``call()``;
- :mod:`~voipstudio_provider.hooks.reads`: records, pages, keyset walks and counts;
- :mod:`~voipstudio_provider.hooks.writes`: bulk updates and deletes;
- :mod:`~voipstudio_provider.hooks.downloads`: file endpoints streamed into file objects.
"""

from __future__ import annotations

from typing import Any

import requests
from airflow.providers.http.hooks.http import HttpHook

from voipstudio_provider.endpoints import MAX_PAGE_SIZE
from voipstudio_provider.exceptions import (
    VoIPstudioAuthenticationError,
    VoIPstudioError,
    VoIPstudioNotFoundError,
)
from voipstudio_provider.hooks.downloads import DownloadResult, DownloadsMixin
from voipstudio_provider.hooks.paths import filter_entries, positive_id
from voipstudio_provider.hooks.reads import ReadsMixin
from voipstudio_provider.hooks.responses import AUTHENTICATION_FAILED
from voipstudio_provider.hooks.writes import WritesMixin

try:
    from airflow.sdk.log import mask_secret
except ImportError:  # pragma: no cover - older task SDK layouts
    from airflow.sdk.execution_time.secrets_masker import mask_secret

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 300.0
DEFAULT_PAGE_SIZE = 1000


class VoIPstudioHook(ReadsMixin, WritesMixin, DownloadsMixin, HttpHook):
    """Call the VoIPstudio History API through a ``voipstudio`` connection.

    The connection's host is the base URL (``https://l7api.com/v1.1/voipstudio``), its
    password the API token. With a login (the numeric user id) the hook authenticates with
    HTTP Basic ``user_id:token``, otherwise with the ``X-Auth-Token`` header. Extras:
    ``page_size``, ``timeout`` (read timeout in seconds) and ``verify_ssl``.

    A hook holds one HTTP session: use one hook per thread.

    :param voipstudio_conn_id: the connection id.
    :param max_attempts: tries per request, the first included.
    :param backoff_base: seconds of the first wait between tries; it doubles each time.
    :param backoff_cap: longest wait between tries, in seconds.
    :param retry_after_cap: longest ``Retry-After`` honoured, in seconds.
    :param timeout: ``(connect, read)`` seconds, or one number for both; defaults to the
        connection's ``timeout`` extra for reading and 10 seconds for connecting.
    :param page_size: rows per page when walking collections; defaults to the connection's
        ``page_size`` extra, then 1000; never above ``MAX_PAGE_SIZE``.
    """

    conn_name_attr = "voipstudio_conn_id"
    default_conn_name = "voipstudio_default"
    conn_type = "voipstudio"
    hook_name = "VoIPstudio"

    def __init__(
        self,
        voipstudio_conn_id: str = default_conn_name,
        *,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        retry_after_cap: float = 60.0,
        timeout: float | tuple[float, float] | None = None,
        page_size: int | None = None,
    ) -> None:
        super().__init__(method="GET", http_conn_id=voipstudio_conn_id)
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.voipstudio_conn_id = voipstudio_conn_id
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self._timeout_arg = timeout
        self._page_size_arg = page_size
        self._session: requests.Session | None = None
        self._token: str = ""
        self.timeout: tuple[float, float] = (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
        self.page_size: int = 1000

    # -- connection and session -------------------------------------------------------

    def get_conn(self, headers: dict[Any, Any] | None = None, extra_options: Any = None):
        """The hook's one ``requests.Session``, built from the connection on first use."""
        if self._session is None:
            self._session = self._new_session()
        if headers:
            self._session.headers.update(headers)
        return self._session

    def _new_session(self) -> requests.Session:
        conn = self.get_connection(self.voipstudio_conn_id)
        host = (conn.host or "").strip()
        if "://" not in host:
            raise ValueError(
                f"connection {self.voipstudio_conn_id!r} needs the base URL as host, "
                "e.g. https://l7api.com/v1.1/voipstudio"
            )
        self.base_url = host.rstrip("/")
        self._token = conn.password or ""
        if not self._token:
            raise ValueError(f"connection {self.voipstudio_conn_id!r} has no API token")
        mask_secret(self._token)
        extra = conn.extra_dejson or {}
        self.timeout = self._resolve_timeout(extra.get("timeout"))
        self.page_size = self._resolve_page_size(extra.get("page_size"))

        session = requests.Session()
        session.headers.update({"Accept": "application/json", "User-Agent": "airflow-voipstudio"})
        login = (conn.login or "").strip()
        if login:
            if not login.isdigit():
                raise ValueError("the connection's login must be the numeric VoIPstudio user id")
            session.auth = (login, self._token)
        else:
            session.headers["X-Auth-Token"] = self._token
        session.verify = _as_bool(extra.get("verify_ssl", extra.get("verify", True)))
        session.trust_env = True
        if self.keep_alive_adapter is not None:
            session.mount("http://", self.keep_alive_adapter)
            session.mount("https://", self.keep_alive_adapter)
        return session

    def _resolve_timeout(self, extra_timeout: Any) -> tuple[float, float]:
        value = self._timeout_arg if self._timeout_arg is not None else extra_timeout
        if value in (None, ""):
            return (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
        if isinstance(value, list | tuple):
            connect, read = (float(v) for v in value)
            return (connect, read)
        read = float(value)
        return (min(DEFAULT_CONNECT_TIMEOUT, read), read)

    def _resolve_page_size(self, extra_page_size: Any) -> int:
        value = self._page_size_arg if self._page_size_arg is not None else extra_page_size
        size = int(value) if value not in (None, "") else DEFAULT_PAGE_SIZE
        if size < 1:
            raise ValueError(f"page_size must be at least 1, got {size}")
        return min(size, MAX_PAGE_SIZE)

    def close(self) -> None:
        """Close the HTTP session; the next call opens a new one."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> VoIPstudioHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checks of the connection ------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        """A cheap credentials check: ``hook.ping()`` gives ``{"response": "Pong"}``."""
        return (self.call("ping") or {}).get("data") or {}

    def me(self) -> dict[str, Any]:
        """The user the token belongs to: ``hook.me()["email"]``."""
        return (self.call("me") or {}).get("data") or {}

    def test_connection(self) -> tuple[bool, str]:
        """Check the base URL and the token with one ``GET /ping``; never raises."""
        attempts, self.max_attempts = self.max_attempts, 1
        try:
            answer = self.ping()
        except VoIPstudioAuthenticationError:
            return False, AUTHENTICATION_FAILED
        except VoIPstudioNotFoundError:
            return False, "not found: check the base URL, e.g. https://l7api.com/v1.1/voipstudio"
        except VoIPstudioError as error:
            return False, f"cannot use {self.base_url or 'the base URL'}: {error}"
        except ValueError as error:
            return False, str(error)
        finally:
            self.max_attempts = attempts
        return True, f"Connected to {self.base_url}: {answer.get('response', 'ok')}"


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return bool(value)


__all__ = ["DownloadResult", "VoIPstudioHook", "filter_entries", "positive_id"]
