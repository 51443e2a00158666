"""Export each user's CDRs of a UTC day as CSV to S3 (``voipstudio_export_user_cdrs``).

One file per user per day, ``{p}/cdr-csv/user_id={user}/date=YYYY-MM-DD/cdrs.csv``, streamed
from ``/users/{id}/cdrs.csv`` through a spooled temporary file (memory stays bounded) and
checked, before it is uploaded, against the API's count of that user's CDRs of the day.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowException

from voipstudio_provider.layout import as_utc
from voipstudio_provider.settings import AWS_CONN_ID, VOIPSTUDIO_CONN_ID

log = logging.getLogger(__name__)

#: Variable with user ids (JSON list) whose CSV is written every day, calls or not.
EXPORT_USERS_VARIABLE = "voipstudio_export_user_ids"
SPOOL_SIZE = 8 * 1024 * 1024
BATCH_SUMMARY_KEY = "batch_summary"
CDR_CSV_ASSET = Asset(name="voipstudio_cdr_csv", uri="voipstudio://archive/cdr-csv")


class ExportIncompleteError(AirflowException):
    """Some users' CSVs could not be exported; their ids are in the message."""


class CsvRowCounter:
    """A binary file wrapper that counts CSV records while they are written through it.

    A line break ends a record only outside a quoted field; quotes inside a field are
    doubled (RFC 4180), so quote parity tells which is which without parsing. Rewinding to
    the start (as the hook does before retrying a broken download) starts the count afresh.

    :param fileobj: the seekable binary file the bytes go to.
    """

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._file = fileobj
        self._start = fileobj.tell()
        self._reset()

    def _reset(self) -> None:
        self.line_breaks = 0
        self.size = 0
        self._quoted = False
        self._last = b""
        self._sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        for index, part in enumerate(bytes(data).split(b'"')):
            if index:
                self._quoted = not self._quoted
            if not self._quoted:
                self.line_breaks += part.count(b"\n")
        if data:
            self._last = bytes(data[-1:])
        self.size += len(data)
        self._sha256.update(data)
        return self._file.write(data)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (self._start, 0):
            raise OSError("a CSV being counted can only be rewound to its start")
        self._reset()
        return self._file.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        return self._file.truncate(size)

    def flush(self) -> None:
        self._file.flush()

    @property
    def records(self) -> int:
        """Records written, the header included; a last line without a line break counts."""
        return self.line_breaks + (1 if self._last not in (b"", b"\n") else 0)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


def export_day(data_interval_end: dt.datetime, day: str | None = None) -> dt.date:
    """The UTC day a run exports: ``day`` if given, else the day before its interval's end.

    With the 03:00 schedule, a run whose interval ends at 03:00 exports the UTC day that
    ended three hours earlier, so calls finishing after midnight are in.
    """
    if day:
        return dt.date.fromisoformat(str(day))
    return as_utc(data_interval_end).date() - dt.timedelta(days=1)


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def listed_user_ids(raw: Any) -> list[int]:
    """The ids of the ``voipstudio_export_user_ids`` Variable (a JSON list), validated."""
    if raw is None or raw == "":
        return []
    values = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(values, list):
        raise ValueError(f"{EXPORT_USERS_VARIABLE} must be a JSON list of user ids")
    return sorted({int(v) for v in values})


def users_to_export(voip_hook, day: dt.date, listed: Iterable[int] = ()) -> list[int]:
    """Every user with a CDR on ``day``, plus the ``listed`` ones, ascending."""
    since, until = day_bounds(day)
    users = set(int(u) for u in listed)
    for cdr in voip_hook.iter_records("cdrs", since=since, until=until):
        if cdr.get("user_id") is not None:
            users.add(int(cdr["user_id"]))
    return sorted(users)


def user_batches(user_ids: Sequence[int], size: int) -> list[list[int]]:
    """Users cut into groups of ``size``, one mapped task each."""
    if size < 1:
        raise ValueError("users_per_batch must be at least 1")
    return [list(user_ids[i : i + size]) for i in range(0, len(user_ids), size)]


def plan_user_batches(
    day: dt.date,
    listed: Any,
    users_per_batch: int,
    voipstudio_conn_id: str = VOIPSTUDIO_CONN_ID,
) -> list[list[int]]:
    """The users to export for ``day`` (with calls, or listed), in groups for mapping.

    :param day: the UTC day exported.
    :param listed: the ``voipstudio_export_user_ids`` Variable's value (JSON list).
    :param users_per_batch: users per mapped task.
    """
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    users = users_to_export(VoIPstudioHook(voipstudio_conn_id), day, listed_user_ids(listed))
    log.info("%d users to export for %s", len(users), day)
    return user_batches(users, users_per_batch)


def _header_line() -> bytes:
    from voipstudio_provider.endpoints import RESOURCES

    return (",".join(RESOURCES["cdrs"].fields) + "\r\n").encode()


def export_user_day(
    voip_hook, s3_client, bucket: str, prefix: str, user_id: int, day: dt.date
) -> dict[str, Any]:
    """Write one user's CSV of one day; raise if its rows differ from the API's count.

    :return: ``{"user_id", "key", "rows", "bytes", "sha256"}``.
    """
    from voipstudio_provider.endpoints import Filter
    from voipstudio_provider.layout import cdr_csv_key

    since, until = day_bounds(day)
    key = cdr_csv_key(prefix, user_id, day)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_SIZE) as spool:
        counter = CsvRowCounter(spool)
        voip_hook.export_user_cdrs_csv(user_id, counter, since=since, until=until)
        if counter.size == 0:  # no header from the API: write one, an empty day is a file
            counter.write(_header_line())
        rows = counter.records - 1
        expected = voip_hook.count(
            "cdrs", since=since, until=until, filters=[Filter("user_id", "eq", int(user_id))]
        )
        if rows != expected:
            raise ValueError(f"CSV has {rows} rows but the API counts {expected} CDRs")
        digest = counter.sha256
        spool.seek(0)
        s3_client.put_object(
            Bucket=bucket,
            Key=key,
            Body=spool,
            ContentLength=counter.size,
            ContentType="text/csv",
            Metadata={"sha256": digest, "size": str(counter.size), "rows": str(rows)},
            ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
        )
    log.info("user %s %s: %d rows to s3://%s/%s", user_id, day, rows, bucket, key)
    return {"user_id": int(user_id), "key": key, "rows": rows, "bytes": counter.size}


def export_user_batch(
    user_ids: Sequence[int],
    day: dt.date,
    bucket: str,
    prefix: str,
    *,
    voipstudio_conn_id: str = VOIPSTUDIO_CONN_ID,
    aws_conn_id: str = AWS_CONN_ID,
) -> dict[str, Any]:
    """Export every user of a batch; a failed user does not stop the others.

    :return: ``{"users", "exported", "rows", "bytes", "failed_ids", "errors"}``.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    voip_hook = VoIPstudioHook(voipstudio_conn_id=voipstudio_conn_id)
    s3_client = S3Hook(aws_conn_id=aws_conn_id).get_conn()
    summary: dict[str, Any] = {
        "users": len(user_ids),
        "exported": 0,
        "rows": 0,
        "bytes": 0,
        "failed_ids": [],
        "errors": {},
    }
    for user_id in user_ids:
        try:
            written = export_user_day(voip_hook, s3_client, bucket, prefix, user_id, day)
        except Exception as error:
            log.error("user %s %s not exported: %s: %s", user_id, day, type(error).__name__, error)
            summary["failed_ids"].append(int(user_id))
            summary["errors"][str(user_id)] = f"{type(error).__name__}: {error}"
            continue
        summary["exported"] += 1
        summary["rows"] += written["rows"]
        summary["bytes"] += written["bytes"]
    return summary


def raise_if_users_failed(summary: Mapping[str, Any]) -> None:
    if summary["failed_ids"]:
        raise ExportIncompleteError(f"CSV not exported for users {summary['failed_ids']}")


def combine_export_summaries(
    planned: Sequence[Sequence[int]] | None,
    summaries: Iterable[Mapping[str, Any] | None],
    *,
    day: str,
    bucket: str,
    prefix: str,
) -> dict[str, Any]:
    """The run's totals; users of planned batches that reported nothing count as failed."""
    summaries = [s for s in summaries if s]
    planned_users = sorted(u for batch in (planned or []) for u in batch)
    failed = sorted({u for s in summaries for u in s["failed_ids"]})
    done = sum(s["exported"] for s in summaries)
    reported = sum(s["users"] for s in summaries)
    return {
        "day": day,
        "bucket": bucket,
        "prefix": prefix,
        "planned": planned is not None,
        "users": len(planned_users),
        "exported": done,
        "rows": sum(s["rows"] for s in summaries),
        "bytes": sum(s["bytes"] for s in summaries),
        "failed_ids": failed[:100],
        "unreported_users": len(planned_users) - reported,
    }


def describe_export(summary: Mapping[str, Any]) -> str:
    text = (
        f"CDR CSV export of {summary['day']} to s3://{summary['bucket']}/{summary['prefix']}/"
        f"cdr-csv/: {summary['exported']} of {summary['users']} users exported, "
        f"{summary['rows']} rows, {summary['bytes']} bytes"
    )
    if summary["failed_ids"]:
        text += f"; failed users {summary['failed_ids']}"
    if summary["unreported_users"]:
        text += f"; {summary['unreported_users']} users in batches that did not finish"
    if not summary["planned"]:
        text += "; the users of the day could not be listed"
    return text


def summarize_run(ti, batch_task_id: str, plan_task_id: str, params: Mapping[str, Any]) -> dict:
    """Pull the plan and every batch summary of this run, add them up and log the totals."""
    from voipstudio_provider.settings import resolve_bucket_and_prefix

    planned = ti.xcom_pull(task_ids=plan_task_id)
    summaries = ti.xcom_pull(task_ids=batch_task_id, key=BATCH_SUMMARY_KEY)
    if not isinstance(summaries, list):
        summaries = [summaries]
    bucket, prefix = resolve_bucket_and_prefix(params)
    day = ti.xcom_pull(task_ids=plan_task_id, key="day")
    summary = combine_export_summaries(planned, summaries, day=day, bucket=bucket, prefix=prefix)
    log.info("%s", describe_export(summary))
    return summary


def raise_if_export_incomplete(summary: Mapping[str, Any]) -> None:
    if not summary["planned"] or summary["failed_ids"] or summary["unreported_users"]:
        raise ExportIncompleteError(describe_export(summary))
