"""The VoIPstudio History module, described once as data.

Every endpoint of the History reference is one row of :data:`ENDPOINTS`. The hook, the
operators, the sandbox and the tests all read this table, so no two places can disagree
about a path, a method, a date field or a status code. This module imports nothing from
Airflow so that the sandbox can use it too.

Rows marked ``assumption`` are where the public reference is silent; the README lists them
under "Assumptions where the real API is undocumented".

The module is longer than 400 lines because most of it is the table itself (about thirty
rows, one per endpoint, and the resources' fields and filters): a table read in one place.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field


class Shape(enum.StrEnum):
    """The handful of shapes every History endpoint takes."""

    LIST = "list"  # paged collection: {"data": [...], "total": N}
    GET = "get"  # one resource by id: {"data": {...}, "links": {}}
    DOWNLOAD = "download"  # one resource by id as a file (MP3, PCAP, trace, CSV)
    DELETE_IDS = "delete_ids"  # DELETE /<resource>/{ids}, comma-separated integers
    DELETE_ALL = "delete_all"  # DELETE /<resource>: the whole collection
    UPDATE = "update"  # bulk PATCH with a JSON list of partial objects carrying "id"
    DICTIONARY = "dictionary"  # enumerations of a resource's fields


@dataclass(frozen=True)
class Resource:
    """A kind of record in the History module.

    :param name: the collection's path segment, e.g. ``monitors``.
    :param date_field: the field that dates a record (``None`` where it has none).
    :param fields: every field of the record, ``id`` first.
    :param number_fields: fields holding phone numbers (used by legal hold and purges).
    :param owner_field: the field naming the user who owns the record, if any.
    """

    name: str
    date_field: str | None
    fields: tuple[str, ...]
    number_fields: tuple[str, ...] = ()
    owner_field: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of the History module.

    :param operation: a unique snake_case name, used as the hook's and operators' key.
    :param method: ``GET``, ``PATCH`` or ``DELETE``.
    :param path: the path template below the base URL; ``{id}``/``{ids}`` are placeholders.
    :param shape: what the endpoint does, see :class:`Shape`.
    :param resource: the :class:`Resource` name the endpoint serves.
    :param content_type: the media type of a successful answer's body.
    :param success_status: the status of a successful answer.
    :param error_statuses: the documented error statuses.
    :param suffix: file extension of a download (``mp3``, ``pcap``, ``trace``, ``csv``).
    """

    operation: str
    method: str
    path: str
    shape: Shape
    resource: str
    content_type: str = "application/json"
    success_status: int = 200
    error_statuses: tuple[int, ...] = (401,)
    suffix: str | None = None
    summary: str = ""

    @property
    def takes_id(self) -> bool:
        return "{id}" in self.path

    @property
    def takes_ids(self) -> bool:
        return "{ids}" in self.path


_CDR_FIELDS = (
    "id", "billsec", "call_id", "calldate", "charge", "clid", "context", "destination",
    "disposition", "dst", "dst_codec", "dst_id", "dst_name", "dst_ua", "duration", "info",
    "live_id", "parent_live_id", "rate", "server_id", "sip_endpoint_id", "src", "src_codec",
    "src_id", "src_name", "src_ua", "t_cause", "type", "user_id",
)  # fmt: skip

RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in (
        Resource("cdrs", "calldate", _CDR_FIELDS, ("src", "dst", "clid"), "user_id"),
        Resource(
            "monitors",
            "timestamp",
            (
                "id",
                "called",
                "caller",
                "context",
                "dst_id",
                "dst_name",
                "duration",
                "live_id",
                "sentiment",
                "sip_endpoint_id",
                "size",
                "src_id",
                "summary",
                "timestamp",
                "transcript",
                "type",
                "user_id",
            ),  # fmt: skip
            ("caller", "called"),
            "user_id",
        ),
        Resource(
            "msdrs",
            "created_at",
            (
                "id",
                "call_id",
                "created_at",
                "dst",
                "dst_id",
                "dst_ua",
                "duration",
                "media_session_id",
                "src",
                "src_id",
                "src_ua",
                "t_cause",
                "type",
                "user_id",
            ),  # fmt: skip
            ("src", "dst"),
            "user_id",
        ),
        Resource(
            "voicemessages",
            "origtime",
            (
                "id",
                "caller",
                "callerid",
                "dialled",
                "duration",
                "extension_id",
                "folder",
                "is_new",
                "live_id",
                "origtime",
                "parent_live_id",
                "transcript",
            ),  # fmt: skip
            ("caller", "callerid", "dialled"),
        ),
        Resource(
            "chats",
            "created_at",
            (
                "id",
                "created_at",
                "customer_id",
                "duration",
                "operator_id",
                "operator_ua",
                "state",
                "visitor_city",
                "visitor_country",
                "visitor_email",
                "visitor_geo",
                "visitor_id",
                "visitor_ip",
                "visitor_name",
                "visitor_referer",
                "visitor_ua",
                "website_id",
            ),  # fmt: skip
        ),
        # assumption: chat messages are listable like any collection.
        Resource("chatmsgs", "created_at", ("id", "chat_id", "created_at", "message")),
        # assumption: statements have no documented fields; only DELETE /statements exists.
        Resource("statements", "created_at", ("id", "created_at", "amount", "description")),
        Resource(
            "sms",
            "created_at",
            ("id", "created_at", "from", "message", "result", "to", "type", "user_id"),
            ("from", "to"),
            "user_id",
        ),
        Resource(
            "mediasessions",
            "created_at",
            (
                "id",
                "call_id",
                "created_at",
                "dst_id",
                "dst_ua",
                "duration",
                "src_id",
                "src_ua",
                "status",
                "type",
                "updated_at",
                "user",
            ),  # fmt: skip
            owner_field="user",
        ),
        Resource(
            "calltracking",
            "created_at",
            (
                "id",
                "channels",
                "cli_hide",
                "cli_prefix",
                "created_at",
                "e164",
                "esc_enabled",
                "fax_email",
                "fax_enabled",
                "flag",
                "has_fax_password",
                "info",
                "name",
                "rate",
                "sms_email",
                "sms_enabled",
                "status",
                "target_id",
                "target_type",
                "tel_verified",
                "uri",
            ),  # fmt: skip
            ("e164",),
        ),
        Resource(
            "users",
            "created_at",
            (
                "id",
                "active",
                "created_at",
                "customer",
                "email",
                "first_name",
                "is_initial",
                "is_root",
                "last_name",
                "roles",
                "two_factor_auth",
                "visited_apps",
            ),  # fmt: skip
        ),
    )
}

_BY_ID = (401, 403, 404)
_WRITE = (400, 401, 403, 404)
PCAP = "application/vnd.tcpdump.pcap"  # assumption

ENDPOINTS: tuple[Endpoint, ...] = (
    # call detail records
    Endpoint("list_cdrs", "GET", "/cdrs", Shape.LIST, "cdrs"),
    Endpoint("get_cdr", "GET", "/cdrs/{id}", Shape.GET, "cdrs", error_statuses=_BY_ID),
    Endpoint("update_cdrs", "PATCH", "/cdrs", Shape.UPDATE, "cdrs", error_statuses=_WRITE),
    Endpoint("delete_all_cdrs", "DELETE", "/cdrs", Shape.DELETE_ALL, "cdrs", success_status=204),
    Endpoint(
        "download_cdr_pcap",
        "GET",
        "/cdrs/{id}.pcap",
        Shape.DOWNLOAD,
        "cdrs",
        content_type=PCAP,
        error_statuses=_BY_ID,
        suffix="pcap",
    ),  # fmt: skip
    Endpoint(
        "download_cdr_trace",
        "GET",
        "/cdrs/{id}.trace",
        Shape.DOWNLOAD,
        "cdrs",
        content_type="text/plain",
        error_statuses=_BY_ID,
        suffix="trace",
    ),  # fmt: skip
    Endpoint("get_cdr_dictionaries", "GET", "/cdrs/dictionaries", Shape.DICTIONARY, "cdrs"),
    # assumption: notes are a small list of {"id", "cdr_id", "created_at", "note", "user_id"}.
    Endpoint("get_cdr_notes", "GET", "/cdrs/{id}/notes", Shape.GET, "cdrs", error_statuses=_BY_ID),
    # assumption: the CDRs of calls that reached a call tracking number.
    Endpoint("list_calltracking_cdrs", "GET", "/cdrs/calltracking", Shape.LIST, "cdrs"),
    # assumption: the call tracking numbers with their settings (the seed's field list).
    Endpoint("list_calltracking", "GET", "/calltracking/cdrs", Shape.LIST, "calltracking"),
    # The real service answers this with a queued export job (202, JSON), not the file: the
    # hook returns that as an ExportJob; voipstudio_export_user_cdrs builds CSVs from /cdrs.
    Endpoint(
        "export_user_cdrs_csv",
        "GET",
        "/users/{id}/cdrs.csv",
        Shape.DOWNLOAD,
        "cdrs",
        content_type="text/csv",
        suffix="csv",
    ),  # fmt: skip
    # call recordings
    Endpoint("list_monitors", "GET", "/monitors", Shape.LIST, "monitors"),
    Endpoint("get_monitor", "GET", "/monitors/{id}", Shape.GET, "monitors", error_statuses=_BY_ID),
    Endpoint(
        "download_monitor_mp3",
        "GET",
        "/monitors/{id}.mp3",
        Shape.DOWNLOAD,
        "monitors",
        content_type="audio/mpeg",
        error_statuses=_BY_ID,
        suffix="mp3",
    ),  # fmt: skip
    Endpoint(
        "delete_monitors",
        "DELETE",
        "/monitors/{ids}",
        Shape.DELETE_IDS,
        "monitors",
        success_status=204,
        error_statuses=_BY_ID,
    ),  # fmt: skip
    Endpoint(
        "delete_all_monitors",
        "DELETE",
        "/monitors",
        Shape.DELETE_ALL,
        "monitors",
        success_status=202,
    ),  # fmt: skip
    # media-server records
    Endpoint("list_msdrs", "GET", "/msdrs", Shape.LIST, "msdrs"),
    Endpoint("get_msdr", "GET", "/msdrs/{id}", Shape.GET, "msdrs", error_statuses=_BY_ID),
    Endpoint(
        "download_msdr_pcap",
        "GET",
        "/msdrs/{id}.pcap",
        Shape.DOWNLOAD,
        "msdrs",
        content_type=PCAP,
        error_statuses=_BY_ID,
        suffix="pcap",
    ),  # fmt: skip
    Endpoint(
        "download_msdr_trace",
        "GET",
        "/msdrs/{id}.trace",
        Shape.DOWNLOAD,
        "msdrs",
        content_type="text/plain",
        error_statuses=_BY_ID,
        suffix="trace",
    ),  # fmt: skip
    Endpoint("get_msdr_dictionaries", "GET", "/msdrs/dictionaries", Shape.DICTIONARY, "msdrs"),
    # voicemail
    Endpoint("list_voicemessages", "GET", "/voicemessages", Shape.LIST, "voicemessages"),
    Endpoint(
        "get_voicemessage",
        "GET",
        "/voicemessages/{id}",
        Shape.GET,
        "voicemessages",
        error_statuses=_BY_ID,
    ),  # fmt: skip
    Endpoint(
        "download_voicemessage_mp3",
        "GET",
        "/voicemessages/{id}.mp3",
        Shape.DOWNLOAD,
        "voicemessages",
        content_type="audio/mpeg",
        error_statuses=_BY_ID,
        suffix="mp3",
    ),  # fmt: skip
    Endpoint(
        "update_voicemessages",
        "PATCH",
        "/voicemessages",
        Shape.UPDATE,
        "voicemessages",
        error_statuses=_WRITE,
    ),  # fmt: skip
    Endpoint(
        "delete_voicemessages",
        "DELETE",
        "/voicemessages/{ids}",
        Shape.DELETE_IDS,
        "voicemessages",
        success_status=204,
        error_statuses=_BY_ID,
    ),  # fmt: skip
    Endpoint(
        "delete_all_voicemessages",
        "DELETE",
        "/voicemessages",
        Shape.DELETE_ALL,
        "voicemessages",
        success_status=202,
    ),  # fmt: skip
    # chats
    Endpoint("list_chats", "GET", "/chats", Shape.LIST, "chats"),
    Endpoint("get_chat", "GET", "/chats/{id}", Shape.GET, "chats", error_statuses=_BY_ID),
    # assumption: GET /chatmsgs exists; it is not in the reference.
    Endpoint("list_chatmsgs", "GET", "/chatmsgs", Shape.LIST, "chatmsgs"),
    Endpoint(
        "delete_chatmsgs",
        "DELETE",
        "/chatmsgs/{ids}",
        Shape.DELETE_IDS,
        "chatmsgs",
        success_status=204,
        error_statuses=_BY_ID,
    ),  # fmt: skip
    Endpoint(
        "delete_all_chatmsgs",
        "DELETE",
        "/chatmsgs",
        Shape.DELETE_ALL,
        "chatmsgs",
        success_status=204,
    ),  # fmt: skip
    # statements, SMS and media sessions
    Endpoint(
        "delete_all_statements",
        "DELETE",
        "/statements",
        Shape.DELETE_ALL,
        "statements",
        success_status=204,
    ),  # fmt: skip
    Endpoint("get_sms_dictionaries", "GET", "/sms/dictionaries", Shape.DICTIONARY, "sms"),
    Endpoint(
        "get_mediasession_dictionaries",
        "GET",
        "/mediasessions/dictionaries",
        Shape.DICTIONARY,
        "mediasessions",
    ),  # fmt: skip
)

#: Endpoints outside the History module that a client needs: credentials checks and login.
AUTH_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("ping", "GET", "/ping", Shape.GET, "users"),
    Endpoint("me", "GET", "/me", Shape.GET, "users"),
    Endpoint("login", "POST", "/login", Shape.GET, "users", error_statuses=(400, 401)),
)
#: How the vendor's command-line client makes and revokes API tokens. The provider never
#: calls these (a connection holds a token made beforehand); the sandbox serves them.
API_TOKEN_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("create_api_token", "POST", "/apitokens", Shape.GET, "users", success_status=201,
             error_statuses=(400, 401)),
    Endpoint("list_api_tokens", "GET", "/apitokens", Shape.LIST, "users",
             error_statuses=(400, 401)),
    Endpoint("revoke_api_token", "DELETE", "/apitokens/{token}", Shape.DELETE_IDS, "users",
             success_status=204, error_statuses=(401, 404)),
)  # fmt: skip

#: Assumption: the largest page the service serves, and its default.
MAX_PAGE_SIZE = 5000
DEFAULT_PAGE_SIZE = 25
#: Assumption: keep every DELETE-by-ids URL below this many characters.
MAX_URL_LENGTH = 2000
#: Operators ``filter`` accepts; ``between`` is rejected by the service with 400.
FILTER_OPERATORS = ("eq", "like", "gt", "gte", "lt", "lte")
#: Assumption: voicemail folders.
VOICEMAIL_FOLDERS = ("INBOX", "Old")
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

BY_OPERATION: dict[str, Endpoint] = {e.operation: e for e in ENDPOINTS + AUTH_ENDPOINTS}


def bare_media_type(content_type: str | None) -> str:
    """A ``Content-Type`` without parameters, lower case: ``text/csv; charset=utf-8`` gives
    ``text/csv``; ``""`` for none."""
    return (content_type or "").split(";")[0].strip().lower()


def endpoint(operation: str) -> Endpoint:
    """Return the endpoint named ``operation``; raise ``KeyError`` naming the known ones."""
    try:
        return BY_OPERATION[operation]
    except KeyError:
        raise KeyError(f"unknown VoIPstudio operation {operation!r}") from None


def endpoints_of(resource: str, shape: Shape | None = None) -> list[Endpoint]:
    """Every History endpoint serving ``resource``, optionally only those of ``shape``."""
    return [e for e in ENDPOINTS if e.resource == resource and (shape is None or e.shape == shape)]


@dataclass(frozen=True)
class Filter:
    """One entry of a ``filter=`` query: ``{"property", "operator", "value"}``."""

    property: str
    operator: str
    value: object = field(default=None)

    def as_dict(self) -> dict[str, object]:
        return {"property": self.property, "operator": self.operator, "value": self.value}


# -- the API's dates (UTC, ``YYYY-MM-DD HH:MM:SS``) ---------------------------------------


def parse_api_datetime(value: str) -> dt.datetime:
    """Parse the API's ``YYYY-MM-DD HH:MM:SS`` (UTC) into an aware datetime."""
    return dt.datetime.strptime(value, DATE_FORMAT).replace(tzinfo=dt.UTC)


def as_utc(moment: dt.datetime) -> dt.datetime:
    """A plain aware UTC datetime from any aware one. Through a timestamp, because a pendulum
    DateTime (what Airflow's context holds) loses its zone in ``astimezone()``."""
    return dt.datetime.fromtimestamp(moment.timestamp(), dt.UTC)


def format_api_datetime(value: dt.datetime) -> str:
    """Format an aware (or naive UTC) datetime as the API expects in filters."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.strftime(DATE_FORMAT)
