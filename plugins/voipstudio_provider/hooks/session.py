"""What a hook reads from its ``voipstudio`` connection, and the ``requests.Session`` built
from it.

The connection's host is the base URL and its password the API token, masked in Airflow's
logs as soon as it is read. A login (the numeric user id or the user's e-mail) means HTTP
Basic ``login:token``; without one the token goes in the ``X-Auth-Token`` header. The extras
``timeout``, ``page_size`` and ``verify_ssl`` are read here, the hook's own arguments taking
precedence over them. Every connection of the session is probed with TCP keep-alive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests
from airflow.sdk.log import mask_secret
from requests_toolbelt.adapters.socket_options import TCPKeepAliveAdapter

from voipstudio_provider.endpoints import MAX_PAGE_SIZE
from voipstudio_provider.hooks.paths import base_url_of

if TYPE_CHECKING:
    from airflow.sdk import Connection

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 300.0
DEFAULT_PAGE_SIZE = 1000
#: TCP keep-alive as Airflow's HttpHook sets it: a connection that is quiet for minutes (a
#: slow answer, a long read timeout) keeps being probed instead of silently dropped.
KEEP_ALIVE = {"idle": 120, "count": 20, "interval": 30}


@dataclass(frozen=True)
class ConnectionSettings:
    """A ``voipstudio`` connection as the hook uses it.

    :param base_url: the API's base URL, e.g. ``https://l7api.com/v1.1/voipstudio``.
    :param token: the API token.
    :param basic_user: the HTTP Basic user, ``None`` to send the token as ``X-Auth-Token``.
    :param timeout: ``(connect, read)`` seconds.
    :param page_size: rows per page when walking collections.
    :param verify_ssl: whether the server's certificate is verified.
    """

    base_url: str
    token: str = field(repr=False)
    basic_user: str | None
    timeout: tuple[float, float]
    page_size: int
    verify_ssl: bool


def read_connection(
    conn: Connection,
    conn_id: str,
    *,
    timeout: float | tuple[float, float] | None = None,
    page_size: int | None = None,
) -> ConnectionSettings:
    """The settings of connection ``conn_id``; ``timeout`` and ``page_size``, when given,
    override its extras. A missing base URL or token, or a login that is neither a user id
    nor an e-mail, raises ``ValueError`` before any request."""
    host = (conn.host or "").strip()
    if "://" not in host:
        raise ValueError(
            f"connection {conn_id!r} needs the base URL as host, "
            "e.g. https://l7api.com/v1.1/voipstudio"
        )
    base_url = base_url_of(host)
    token = conn.password or ""
    if not token:
        raise ValueError(f"connection {conn_id!r} has no API token")
    mask_secret(token)
    extra = conn.extra_dejson or {}
    login = (conn.login or "").strip()
    return ConnectionSettings(
        base_url=base_url,
        token=token,
        timeout=_timeout(_first(timeout, extra.get("timeout"))),
        page_size=_page_size(_first(page_size, extra.get("page_size"))),
        basic_user=_basic_user(login) if login else None,
        verify_ssl=_as_bool(extra.get("verify_ssl", extra.get("verify", True))),
    )


def new_session(settings: ConnectionSettings) -> requests.Session:
    """A session that asks for JSON, authenticates every request and keeps connections alive."""
    session = requests.Session()
    session.headers.update({"Accept": "application/json", "User-Agent": "airflow-voipstudio"})
    if settings.basic_user is not None:
        session.auth = (settings.basic_user, settings.token)
    else:
        session.headers["X-Auth-Token"] = settings.token
    session.verify = settings.verify_ssl
    keep_alive = TCPKeepAliveAdapter(**KEEP_ALIVE)
    session.mount("http://", keep_alive)
    session.mount("https://", keep_alive)
    return session


def _first(argument: Any, extra: Any) -> Any:
    """The hook's argument when given, else the connection's extra."""
    return argument if argument is not None else extra


def _basic_user(login: str) -> str:
    """The Basic user of a connection's login: the numeric user id (the documented form) or
    the user's e-mail (what a public client sends); anything else is refused before a request."""
    local, at, domain = login.partition("@")
    is_email = bool(at and local and "." in domain) and not any(
        c.isspace() or c == ":" for c in login
    )
    if not (login.isascii() and login.isdigit()) and not is_email:
        raise ValueError(
            "the connection's login must be the numeric VoIPstudio user id or the user's e-mail"
        )
    return login


def _timeout(value: Any) -> tuple[float, float]:
    """``(connect, read)`` seconds from a number (read; connecting waits at most 10 s), a
    pair, or nothing (the defaults)."""
    if value in (None, ""):
        return (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
    if isinstance(value, list | tuple):
        connect, read = (float(v) for v in value)
        return (connect, read)
    read = float(value)
    return (min(DEFAULT_CONNECT_TIMEOUT, read), read)


def _page_size(value: Any) -> int:
    size = int(value) if value not in (None, "") else DEFAULT_PAGE_SIZE
    if size < 1:
        raise ValueError(f"page_size must be at least 1, got {size}")
    return min(size, MAX_PAGE_SIZE)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return bool(value)
