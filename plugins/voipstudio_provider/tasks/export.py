"""Export each user's CDRs of a UTC day as CSV to S3 (``voipstudio_export_user_cdrs``).

The task bodies: the day a run exports, the users listed in a Variable, the users cut into
mapped batches, each batch's summary and the run's totals. Building and checking one user's
CSV is :mod:`voipstudio_provider.engine.exports.cdr_csv`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowException

from voipstudio_provider.endpoints import as_utc
from voipstudio_provider.engine.exports.cdr_csv import (
    export_user_day,
    user_batches,
    users_to_export,
)
from voipstudio_provider.engine.summaries import BATCH_SUMMARY_KEY
from voipstudio_provider.tasks.settings import (
    AWS_CONN_ID,
    VOIPSTUDIO_CONN_ID,
    listed_user_ids,
)

log = logging.getLogger(__name__)

#: Variable with user ids (JSON list) whose CSV is written every day, calls or not.
#: A mapped group's name in the grid, e.g. ``users 1001–1006``, rendered from its argument
#: when the task starts, so a failed group is named too.
BATCH_NAME_TEMPLATE = "users {{ task.op_kwargs.user_ids[0] }}–{{ task.op_kwargs.user_ids[-1] }}"
CDR_CSV_ASSET = Asset(name="voipstudio_cdr_csv", uri="voipstudio://archive/cdr-csv")


class ExportIncompleteError(AirflowException):
    """Some users' CSVs could not be exported; their ids are in the message."""


def export_day(data_interval_end: dt.datetime, day: str | None = None) -> dt.date:
    """The UTC day a run exports: ``day`` if given, else the day before its interval's end.

    With the 03:00 schedule, a run whose interval ends at 03:00 exports the UTC day that
    ended three hours earlier, so calls finishing after midnight are in.
    """
    if day:
        return dt.date.fromisoformat(str(day))
    return as_utc(data_interval_end).date() - dt.timedelta(days=1)


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
    from voipstudio_provider.tasks.settings import resolve_bucket_and_prefix

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
