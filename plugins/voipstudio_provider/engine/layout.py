"""Where things live in the archive bucket (README, "Bucket layout").

Every key the provider writes or checks is built here, so the layout is stated once.
Dates in keys are UTC days taken from the record's own date field.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from voipstudio_provider.endpoints import (
    RESOURCES,
    Endpoint,
    as_utc,
    endpoint,
    parse_api_datetime,
)


@dataclass(frozen=True)
class ArchiveKind:
    """A kind of binary the archive DAGs keep.

    :param name: the kind's name, as used in DAG params and summaries.
    :param operation: the download endpoint's operation name in the endpoint table.
    :param folder: the folder below the prefix.
    :param sidecar: whether a JSON sidecar (the record plus ``sha256``, ``size``,
        ``archived_at``) is written beside the binary.
    """

    name: str
    operation: str
    folder: str
    sidecar: bool

    @property
    def endpoint(self) -> Endpoint:
        return endpoint(self.operation)

    @property
    def resource(self) -> str:
        return self.endpoint.resource

    @property
    def suffix(self) -> str:
        return self.endpoint.suffix or "bin"

    @property
    def content_type(self) -> str:
        return self.endpoint.content_type


ARCHIVE_KINDS: dict[str, ArchiveKind] = {
    k.name: k
    for k in (
        ArchiveKind("monitors", "download_monitor_mp3", "recordings", sidecar=True),
        ArchiveKind("voicemessages", "download_voicemessage_mp3", "voicemail", sidecar=True),
        ArchiveKind("cdr_pcaps", "download_cdr_pcap", "pcaps/cdrs", sidecar=False),
        ArchiveKind("msdr_pcaps", "download_msdr_pcap", "pcaps/msdrs", sidecar=False),
        ArchiveKind("cdr_traces", "download_cdr_trace", "pcaps/cdrs", sidecar=False),
        ArchiveKind("msdr_traces", "download_msdr_trace", "pcaps/msdrs", sidecar=False),
    )
}


_DAY = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")


def key_day(key: str) -> dt.date:
    """The ``date=YYYY-MM-DD`` day of an archive key."""
    found = _DAY.search(key)
    if found is None:
        raise ValueError(f"{key} names no day")
    return dt.date.fromisoformat(found.group(1))


def record_day(resource: str, record: dict) -> dt.date:
    """The UTC day of a record, from its resource's own date field."""
    date_field = RESOURCES[resource].date_field
    if date_field is None:
        raise ValueError(f"{resource} records carry no date field")
    return parse_api_datetime(record[date_field]).date()


def _day(day: dt.date) -> str:
    return f"date={day.isoformat()}"


def archive_key(prefix: str, kind: ArchiveKind, record: dict) -> str:
    """``{p}/recordings/date=YYYY-MM-DD/{id}.mp3`` and its siblings."""
    day = record_day(kind.resource, record)
    return f"{prefix}/{kind.folder}/{_day(day)}/{int(record['id'])}.{kind.suffix}"


def sidecar_key(prefix: str, kind: ArchiveKind, record: dict) -> str:
    """The JSON sidecar beside a binary: same key, ``.json`` instead of its suffix."""
    binary = archive_key(prefix, kind, record)
    return binary[: -len(kind.suffix)] + "json"


def quarantine_key(prefix: str, key: str, moment: dt.datetime) -> str:
    """Where a stored copy that failed verification is kept before it is replaced:
    ``{p}/quarantine/recordings/date=YYYY-MM-DD/{id}.{YYYYMMDDTHHMMSSZ}.mp3`` for
    ``{p}/recordings/date=YYYY-MM-DD/{id}.mp3``, stamped with the UTC moment it was set
    aside."""
    if not key.startswith(f"{prefix}/"):
        raise ValueError(f"{key} is not below the prefix {prefix}")
    folder, _, name = key[len(prefix) + 1 :].rpartition("/")
    stem, dot, suffix = name.rpartition(".")
    stamp = as_utc(moment).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{prefix}/quarantine/{folder}/{stem or suffix}.{stamp}{dot}{suffix if stem else ''}"


def cdr_csv_key(prefix: str, user_id: int, day: dt.date) -> str:
    """``{p}/cdr-csv/user_id={user}/date=YYYY-MM-DD/cdrs.csv``."""
    return f"{prefix}/cdr-csv/user_id={int(user_id)}/{_day(day)}/cdrs.csv"


def chat_key(prefix: str, chat_id: int, day: dt.date) -> str:
    """``{p}/chats/date=YYYY-MM-DD/{chat_id}.json``: a chat and its messages."""
    return f"{prefix}/chats/{_day(day)}/{int(chat_id)}.json"


def audit_key(prefix: str, dag_id: str, run_id: str) -> str:
    """``{p}/audit/{dag_id}/{run_id}.jsonl``: one line per deleted or skipped item."""
    return f"{prefix}/audit/{dag_id}/{run_id}.jsonl"


def plan_key(prefix: str, dag_id: str, run_id: str) -> str:
    """The purge plan, next to the audit log of the same run."""
    return f"{prefix}/audit/{dag_id}/{run_id}.plan.json"


def highwater_key(prefix: str, kind_name: str) -> str:
    """``{p}/highwater/{kind}.json``: the highest id archived and verified without gaps."""
    return f"{prefix}/highwater/{kind_name}.json"


def ledger_prefix(prefix: str, day: dt.date) -> str:
    """``{p}/ledger/date=YYYY-MM-DD/``: what each archive batch stored for that day."""
    return f"{prefix}/ledger/{_day(day)}/"


def ledger_key(prefix: str, day: dt.date, name: str) -> str:
    """One batch's ledger of one day, ``{p}/ledger/date=YYYY-MM-DD/{name}.jsonl``."""
    return f"{ledger_prefix(prefix, day)}{name}.jsonl"


def report_key(prefix: str, day: dt.date) -> str:
    """``{p}/reconciliation/date=YYYY-MM-DD/report.json``."""
    return f"{prefix}/reconciliation/{_day(day)}/report.json"


def manifests_prefix(prefix: str) -> str:
    """``{p}/manifests/``: one folder per day."""
    return f"{prefix}/manifests/"


def manifest_key(prefix: str, day: dt.date, version: int = 1, suffix: str = "json") -> str:
    """``{p}/manifests/date=YYYY-MM-DD/manifest.json`` (version 1) or ``manifest.N.json``;
    ``suffix="jsonl"`` gives the object list of the same version."""
    name = "manifest" if version == 1 else f"manifest.{int(version)}"
    return f"{manifests_prefix(prefix)}{_day(day)}/{name}.{suffix}"


def subjects_prefix(prefix: str, day: dt.date | None = None) -> str:
    """``{p}/subjects/`` or ``{p}/subjects/date=YYYY-MM-DD/``: the subject index."""
    return f"{prefix}/subjects/" + (f"{_day(day)}/" if day else "")


def subjects_key(prefix: str, day: dt.date, name: str) -> str:
    """One index object of one day, ``{p}/subjects/date=YYYY-MM-DD/{name}.jsonl``: the
    records archived that day (by their own date) and the numbers each involves."""
    return f"{subjects_prefix(prefix, day)}{name}.jsonl"


def legal_hold_audit_key(prefix: str, run_id: str) -> str:
    """``{p}/audit/legal-hold/{run_id}.jsonl``: each Object Lock legal hold set or removed."""
    return f"{prefix}/audit/legal-hold/{run_id}.jsonl"


def erasure_audit_key(prefix: str, run_id: str) -> str:
    """``{p}/audit/erasure/{run_id}.jsonl``: each archived object erased or kept, and why."""
    return f"{prefix}/audit/erasure/{run_id}.jsonl"


def erasure_pending_key(prefix: str, run_id: str) -> str:
    """``{p}/erasure/pending/{run_id}.json``: archived objects an erasure had to keep for a
    while (Object Lock retention, a duty to keep), and from when they may go."""
    return f"{prefix}/erasure/pending/{run_id}.json"


def quarantine_stem(prefix: str, key: str) -> str:
    """The start of every quarantined copy of ``key`` (see :func:`quarantine_key`)."""
    folder, _, name = key[len(prefix) + 1 :].rpartition("/")
    return f"{prefix}/quarantine/{folder}/{name.rpartition('.')[0]}."
