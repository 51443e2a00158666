"""The archive DAGs' steps: plan a window in batches, archive one batch, sum up a run.

``voipstudio_archive_recordings`` and ``voipstudio_archive_pcaps`` are three tasks each:
a planning task lists the window and returns small batch descriptions (id ranges, never
records), a mapped task archives one batch with parallel streams, and a summary task adds
the batches up. The functions here do that work so the DAG files stay thin; heavy imports
(the hooks, boto3) happen inside them, so the DAG folder parses fast.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow.sdk import Asset, Param
from airflow.sdk.exceptions import AirflowException

from voipstudio_provider.layout import as_utc
from voipstudio_provider.settings import (
    AWS_CONN_ID,
    VOIPSTUDIO_CONN_ID,
    resolve_bucket_and_prefix,
    resolve_s3_options,
)

log = logging.getLogger(__name__)

RECORDING_KINDS = ("monitors", "voicemessages")
PCAP_KINDS = ("cdr_pcaps", "msdr_pcaps")
TRACE_KINDS = ("cdr_traces", "msdr_traces")

#: Batches a run may map over; far below Airflow's ``max_map_length`` (1024). A window
#: with more records gets larger batches instead of more of them.
MAX_BATCHES = 500
#: Failed ids a batch or run summary names in XCom; the log names them all.
MAX_FAILED_IDS_IN_XCOM = 100
BATCH_SUMMARY_KEY = "batch_summary"

#: What a run of each archive DAG emits when its whole window is archived and verified.
RECORDINGS_ASSET = Asset(name="voipstudio_recordings", uri="voipstudio://archive/recordings")
PCAPS_ASSET = Asset(name="voipstudio_pcaps", uri="voipstudio://archive/pcaps")


class ArchiveIncompleteError(AirflowException):
    """Some records of a batch or a run could not be archived; their ids are in the message."""


def batch_params() -> dict[str, Param]:
    """DAG params for how an archive run looks back and splits its window into batches."""
    return {
        "lookback_hours": Param(
            6,
            type="number",
            minimum=0,
            title="Look-back (hours)",
            description="also look at records this many hours before the run's interval",
        ),
        "batch_size": Param(
            200,
            type="integer",
            minimum=1,
            title="Batch size",
            description="records per mapped task (raised so a run maps at most 500 batches)",
        ),
        "max_streams": Param(
            4,
            type="integer",
            minimum=1,
            maximum=32,
            title="Parallel streams",
            description="downloads at a time inside one batch",
        ),
    }


def s3_option_params() -> dict[str, Param]:
    """DAG params for the S3 write options; unset ones come from ``voipstudio_s3_options``."""
    nullable = ["null", "string"]
    from_variable = "default: Variable voipstudio_s3_options"
    return {
        "sse": Param(
            None,
            type=nullable,
            enum=[None, "AES256", "aws:kms"],
            values_display={None: "(from the Variable)", "AES256": "SSE-S3", "aws:kms": "SSE-KMS"},
            title="Server-side encryption",
            description=from_variable,
        ),
        "kms_key_id": Param(
            None, type=nullable, title="KMS key id", description=f"for SSE-KMS; {from_variable}"
        ),
        "storage_class": Param(
            None,
            type=nullable,
            title="Storage class",
            description=f"e.g. STANDARD_IA, GLACIER_IR; {from_variable}",
        ),
        "object_lock_mode": Param(
            None,
            type=nullable,
            enum=[None, "GOVERNANCE", "COMPLIANCE"],
            values_display={None: "(from the Variable)"},
            title="Object Lock mode",
            description=f"the bucket must have Object Lock enabled; {from_variable}",
        ),
        "object_lock_days": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Object Lock days",
            description=f"retain-until = upload time + days; {from_variable}",
        ),
    }


def archive_window(
    data_interval_start: dt.datetime, data_interval_end: dt.datetime, lookback_hours: float
) -> tuple[dt.datetime, dt.datetime]:
    """The records a run looks at: its data interval, started ``lookback_hours`` earlier.

    The look-back catches records that appear in the API after their own date's run; what
    an earlier run already archived is verified in the bucket and skipped.

    :param data_interval_start: the run's data interval start (inclusive).
    :param data_interval_end: the run's data interval end (exclusive).
    :param lookback_hours: how far before the interval to look, in hours (0 or more).
    :return: ``(since, until)`` as aware UTC datetimes.
    """
    if lookback_hours < 0:
        raise ValueError("lookback_hours must not be negative")
    if data_interval_start is None or data_interval_end is None:
        raise ValueError("this DAG needs a data interval: use a data interval timetable")
    since = as_utc(data_interval_start) - dt.timedelta(hours=lookback_hours)
    until = as_utc(data_interval_end)
    if until <= since:
        raise ValueError(f"empty archive window {since.isoformat()} .. {until.isoformat()}")
    return since, until


def _kind(name: str):
    from voipstudio_provider.layout import ARCHIVE_KINDS

    try:
        return ARCHIVE_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown archive kind {name!r}; known: {sorted(ARCHIVE_KINDS)}") from None


def _chunks(ids: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def plan_batches(
    voip_hook,
    kinds: Sequence[str],
    since: dt.datetime,
    until: dt.datetime,
    batch_size: int,
    max_batches: int = MAX_BATCHES,
) -> list[dict[str, Any]]:
    """List the window once per resource and cut its ids into batches.

    Kinds of the same resource (a CDR's PCAP and its trace) share one listing. Only ids are
    kept in memory; the batches carry id ranges, so XCom stays small.

    :param voip_hook: a :class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`.
    :param kinds: archive kind names (see :data:`~voipstudio_provider.layout.ARCHIVE_KINDS`).
    :param since: window start (inclusive) on each resource's date field.
    :param until: window end (exclusive).
    :param batch_size: records per batch; raised when the window would need more than
        ``max_batches`` batches.
    :param max_batches: the most batches a run maps over.
    :return: ``[{"kind", "first_id", "last_id", "count", "since", "until"}, ...]``.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    by_resource: dict[str, list[str]] = {}
    for name in kinds:
        by_resource.setdefault(_kind(name).resource, []).append(name)

    ids_by_resource: dict[str, list[int]] = {}
    for resource in by_resource:
        ids = [int(r["id"]) for r in voip_hook.iter_records(resource, since=since, until=until)]
        ids_by_resource[resource] = sorted(ids)
        log.info("%d %s in %s .. %s", len(ids), resource, since.isoformat(), until.isoformat())

    total_batches = sum(
        math.ceil(len(ids_by_resource[res]) / batch_size) * len(names)
        for res, names in by_resource.items()
    )
    if total_batches > max_batches:
        rows = sum(len(ids_by_resource[res]) * len(names) for res, names in by_resource.items())
        batch_size = math.ceil(rows / max(1, max_batches - len(kinds)))
        log.info(
            "window too large for %d batches: batch size raised to %d", max_batches, batch_size
        )

    batches = []
    for resource, names in by_resource.items():
        for name in names:
            for chunk in _chunks(ids_by_resource[resource], batch_size):
                batches.append(
                    {
                        "kind": name,
                        "first_id": chunk[0],
                        "last_id": chunk[-1],
                        "count": len(chunk),
                        "since": since.isoformat(),
                        "until": until.isoformat(),
                    }
                )
    return batches


def batch_label(batch: Mapping[str, Any]) -> str:
    """A batch's name in the UI's mapped task list, e.g. ``monitors 1201–1400``."""
    return f"{batch['kind']} {batch['first_id']}–{batch['last_id']}"


def batch_records(voip_hook, batch: Mapping[str, Any]) -> list[dict]:
    """The records of a batch, listed again: its id range within its window.

    Records deleted since planning are simply absent; nothing outside the range is added.
    """
    from voipstudio_provider.endpoints import Filter

    kind = _kind(batch["kind"])
    filters = [
        Filter("id", "gte", int(batch["first_id"])),
        Filter("id", "lte", int(batch["last_id"])),
    ]
    return list(
        voip_hook.iter_records(
            kind.resource,
            since=dt.datetime.fromisoformat(batch["since"]),
            until=dt.datetime.fromisoformat(batch["until"]),
            filters=filters,
        )
    )


def archive_target(params: Mapping[str, Any] | None, chunk_size: int | None = None):
    """The :class:`~voipstudio_provider.archive.ArchiveTarget` of a run, from its params."""
    from voipstudio_provider.archive import ArchiveTarget

    bucket, prefix = resolve_bucket_and_prefix(params)
    options = resolve_s3_options(params)
    if chunk_size:
        options["chunk_size"] = int(chunk_size)
    return ArchiveTarget(bucket=bucket, prefix=prefix, **options)


def archive_one_batch(
    batch: Mapping[str, Any],
    target,
    *,
    max_streams: int = 4,
    voipstudio_conn_id: str = VOIPSTUDIO_CONN_ID,
    aws_conn_id: str = AWS_CONN_ID,
) -> dict[str, Any]:
    """Archive every record of one batch; a failed record does not stop the others.

    :param batch: one item of :func:`plan_batches`.
    :param target: where to write (:func:`archive_target`).
    :param max_streams: parallel downloads and uploads inside the batch.
    :param voipstudio_conn_id: the VoIPstudio connection.
    :param aws_conn_id: the Amazon provider's connection for S3.
    :return: the batch summary: ``kind``, ``first_id``, ``last_id``, ``records``,
        ``archived``, ``skipped``, ``failed``, ``bytes``, ``failed_ids`` (bounded) and
        ``errors`` (the first few, for people).
    """
    from voipstudio_provider.archive import FAILED, archive_batch, s3_client_for, summarize
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    kind = _kind(batch["kind"])
    voip_hook = VoIPstudioHook(voipstudio_conn_id=voipstudio_conn_id)
    s3_client = s3_client_for(aws_conn_id, max_streams)
    records = batch_records(voip_hook, batch)
    outcomes = archive_batch(voip_hook, s3_client, kind, records, target, max_streams=max_streams)

    counts = summarize(outcomes)
    failures = [o for o in outcomes if o.status == FAILED]
    for outcome in failures:
        log.error("%s %s not archived: %s", kind.name, outcome.record_id, outcome.error)
    return {
        "kind": kind.name,
        "first_id": int(batch["first_id"]),
        "last_id": int(batch["last_id"]),
        "records": len(outcomes),
        "archived": counts["archived"],
        "skipped": counts["skipped"],
        "failed": counts["failed"],
        "bytes": counts["bytes"],
        "failed_ids": counts["failed_ids"][:MAX_FAILED_IDS_IN_XCOM],
        "errors": {str(o.record_id): o.error for o in failures[:5]},
    }


def raise_if_batch_failed(summary: Mapping[str, Any]) -> None:
    """Fail the batch's task, after all its records were tried, naming what failed."""
    if summary["failed"]:
        ids = ", ".join(str(i) for i in summary["failed_ids"])
        more = summary["failed"] - len(summary["failed_ids"])
        raise ArchiveIncompleteError(
            f"{summary['failed']} of {summary['records']} {summary['kind']} not archived: "
            f"{ids}{f' and {more} more' if more > 0 else ''}"
        )


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def combine_summaries(
    batches: Sequence[Mapping[str, Any]] | None,
    batch_summaries: Iterable[Mapping[str, Any] | None],
    *,
    bucket: str,
    prefix: str,
) -> dict[str, Any]:
    """Add up the batch summaries of a run into one small summary.

    A planned batch without a summary (its task failed before archiving, e.g. the API was
    unreachable) counts as an incomplete batch.

    :param batches: what the planning task returned (``None`` if it failed).
    :param batch_summaries: what each batch task pushed.
    :param bucket: the run's bucket, for the summary.
    :param prefix: the run's prefix, for the summary.
    """
    summaries = [s for s in batch_summaries if s]
    done = {(s["kind"], s["first_id"], s["last_id"]) for s in summaries}
    missing = [
        batch_label(b)
        for b in (batches or [])
        if (b["kind"], int(b["first_id"]), int(b["last_id"])) not in done
    ]
    kinds: dict[str, dict[str, Any]] = {}
    for s in summaries:
        total = kinds.setdefault(
            s["kind"],
            {"records": 0, "archived": 0, "skipped": 0, "failed": 0, "bytes": 0, "failed_ids": []},
        )
        for field in ("records", "archived", "skipped", "failed", "bytes"):
            total[field] += s[field]
        room = MAX_FAILED_IDS_IN_XCOM - len(total["failed_ids"])
        total["failed_ids"].extend(s["failed_ids"][: max(0, room)])
    first = batches[0] if batches else {}
    return {
        "bucket": bucket,
        "prefix": prefix,
        "since": first.get("since"),
        "until": first.get("until"),
        "planned": batches is not None,
        "batches": len(batches or []),
        "incomplete_batches": missing[:MAX_FAILED_IDS_IN_XCOM],
        **{f: sum(k[f] for k in kinds.values()) for f in ("records", "archived", "skipped")},
        "failed": sum(k["failed"] for k in kinds.values()),
        "bytes": sum(k["bytes"] for k in kinds.values()),
        "kinds": kinds,
    }


def describe_summary(summary: Mapping[str, Any]) -> str:
    """The run's summary as lines for the task log."""
    lines = [
        f"archive of s3://{summary['bucket']}/{summary['prefix']}/ "
        f"window {summary['since']} .. {summary['until']} in {summary['batches']} batches: "
        f"{summary['records']} records, {summary['archived']} archived "
        f"({summary['bytes']} bytes), {summary['skipped']} skipped (already verified), "
        f"{summary['failed']} failed"
    ]
    for name, k in sorted(summary["kinds"].items()):
        lines.append(
            f"  {name}: {k['records']} records, {k['archived']} archived ({k['bytes']} bytes), "
            f"{k['skipped']} skipped, {k['failed']} failed"
            + (f": ids {', '.join(map(str, k['failed_ids']))}" if k["failed_ids"] else "")
        )
    if summary["incomplete_batches"]:
        lines.append(f"  batches that did not finish: {', '.join(summary['incomplete_batches'])}")
    if not summary["planned"]:
        lines.append("  the window could not be listed")
    return "\n".join(lines)


def raise_if_run_incomplete(summary: Mapping[str, Any]) -> None:
    """Fail the summary task (and so the run) unless the whole window is archived."""
    problems = []
    if not summary["planned"]:
        problems.append("the window could not be listed")
    for name, k in sorted(summary["kinds"].items()):
        if k["failed"]:
            problems.append(f"{k['failed']} {name} failed (ids {k['failed_ids']})")
    if summary["incomplete_batches"]:
        problems.append(f"batches not finished: {summary['incomplete_batches']}")
    if problems:
        raise ArchiveIncompleteError("archive incomplete: " + "; ".join(problems))


def summarize_run(ti, batch_task_id: str, plan_task_id: str, params: Mapping[str, Any]) -> dict:
    """Pull the plan and every batch summary of this run and add them up."""
    batches = ti.xcom_pull(task_ids=plan_task_id)
    summaries = _as_list(ti.xcom_pull(task_ids=batch_task_id, key=BATCH_SUMMARY_KEY))
    bucket, prefix = resolve_bucket_and_prefix(params)
    summary = combine_summaries(batches, summaries, bucket=bucket, prefix=prefix)
    log.info("%s", describe_summary(summary))
    return summary
