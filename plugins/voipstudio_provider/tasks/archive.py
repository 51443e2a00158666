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

from voipstudio_provider.endpoints import as_utc
from voipstudio_provider.tasks.settings import (
    AWS_CONN_ID,
    VOIPSTUDIO_CONN_ID,
    check_connections,
    fail_on_configuration_error,
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
PLAN_KEY = "plan"
#: A mapped batch's name in the grid, e.g. ``monitors 1201–1400`` (as :func:`batch_label`),
#: rendered from the task's mapped argument when it starts, so a failed batch is named too.
BATCH_NAME_TEMPLATE = (
    "{{ task.op_kwargs.batch.kind }} "
    "{{ task.op_kwargs.batch.first_id }}–{{ task.op_kwargs.batch.last_id }}"
)

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
        raise ValueError("the run has no data interval (see settings.run_interval)")
    since = as_utc(data_interval_start) - dt.timedelta(hours=lookback_hours)
    until = as_utc(data_interval_end)
    if until <= since:
        raise ValueError(f"empty archive window {since.isoformat()} .. {until.isoformat()}")
    return since, until


def _kind(name: str):
    from voipstudio_provider.engine.layout import ARCHIVE_KINDS

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
    marks: Mapping[str, int | None] | None = None,
) -> list[dict[str, Any]]:
    """List the window, and every id above each kind's high-water mark, and cut the ids
    into batches.

    Kinds of the same resource (a CDR's PCAP and its trace) share one listing. Only ids are
    kept in memory; the batches carry id ranges, so XCom stays small.

    :param voip_hook: a :class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`.
    :param kinds: archive kind names (see :data:`~voipstudio_provider.engine.layout.ARCHIVE_KINDS`).
    :param since: window start (inclusive) on each resource's date field.
    :param until: window end (exclusive).
    :param batch_size: records per batch; raised when the window would need more than
        ``max_batches`` batches.
    :param max_batches: the most batches a run maps over.
    :param marks: each kind's high-water mark (see :mod:`~voipstudio_provider.engine.highwater`);
        a kind without one (``None``, or absent) is planned from its window only.
    :return: ``[{"kind", "first_id", "last_id", "count", "since", "until", "above_id"}, ...]``,
        ``above_id`` being the kind's mark.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    by_resource: dict[str, list[str]] = {}
    for name in kinds:
        by_resource.setdefault(_kind(name).resource, []).append(name)

    from voipstudio_provider.endpoints import Filter

    marks = marks or {}
    ids_by_kind: dict[str, list[int]] = {}
    for resource, names in by_resource.items():
        ids = {int(r["id"]) for r in voip_hook.iter_records(resource, since=since, until=until)}
        log.info("%d %s in %s .. %s", len(ids), resource, since.isoformat(), until.isoformat())
        kind_marks = [marks.get(name) for name in names]
        above: set[int] = set()
        if any(m is not None for m in kind_marks):
            lowest = min(m for m in kind_marks if m is not None)
            listed = voip_hook.iter_records(resource, filters=[Filter("id", "gt", lowest)])
            above = {int(r["id"]) for r in listed}
            log.info("%d %s above id %d", len(above), resource, lowest)
        for name, mark in zip(names, kind_marks, strict=True):
            extra = {i for i in above if mark is not None and i > mark}
            ids_by_kind[name] = sorted(ids | extra)

    total_batches = sum(math.ceil(len(ids) / batch_size) for ids in ids_by_kind.values())
    if total_batches > max_batches:
        rows = sum(len(ids) for ids in ids_by_kind.values())
        batch_size = math.ceil(rows / max(1, max_batches - len(kinds)))
        log.info(
            "window too large for %d batches: batch size raised to %d", max_batches, batch_size
        )

    batches = []
    for name, ids in ids_by_kind.items():
        for chunk in _chunks(ids, batch_size):
            batches.append(
                {
                    "kind": name,
                    "first_id": chunk[0],
                    "last_id": chunk[-1],
                    "count": len(chunk),
                    "since": since.isoformat(),
                    "until": until.isoformat(),
                    "above_id": marks.get(name),
                }
            )
    return batches


def plan_run(
    voip_hook,
    s3_client,
    kinds: Sequence[str],
    since: dt.datetime,
    until: dt.datetime,
    batch_size: int,
    *,
    bucket: str,
    prefix: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read each kind's high-water mark and plan the run's batches (:func:`plan_batches`).

    :return: the batches, and the plan the summary reports (window and marks), which an
        empty run reports too.
    """
    from voipstudio_provider.engine.highwater import read_mark

    marks = {name: read_mark(s3_client, bucket, prefix, name) for name in kinds}
    batches = plan_batches(voip_hook, kinds, since, until, batch_size, marks=marks)
    plan = {"since": since.isoformat(), "until": until.isoformat(), "marks": marks}
    return batches, plan


def batch_label(batch: Mapping[str, Any]) -> str:
    """A batch's name in the UI's mapped task list, e.g. ``monitors 1201–1400``."""
    return f"{batch['kind']} {batch['first_id']}–{batch['last_id']}"


def batch_records(voip_hook, batch: Mapping[str, Any]) -> list[dict]:
    """The records of a batch, listed again: its id range within its window, and the ids of
    the range above the batch's high-water mark whatever their date.

    Records deleted since planning are simply absent; nothing outside the range is added.
    """
    from voipstudio_provider.endpoints import RESOURCES, Filter, parse_api_datetime

    kind = _kind(batch["kind"])
    first, last = int(batch["first_id"]), int(batch["last_id"])
    filters = [Filter("id", "gte", first), Filter("id", "lte", last)]
    since = dt.datetime.fromisoformat(batch["since"])
    until = dt.datetime.fromisoformat(batch["until"])
    above = batch.get("above_id")
    wanted = set(batch["ids"]) if batch.get("ids") is not None else None
    if above is None or last <= int(above):
        records = voip_hook.iter_records(kind.resource, since=since, until=until, filters=filters)
    else:
        date_field = RESOURCES[kind.resource].date_field
        records = (
            r
            for r in voip_hook.iter_records(kind.resource, filters=filters)
            if int(r["id"]) > int(above) or since <= parse_api_datetime(r[date_field]) < until
        )
    return [r for r in records if wanted is None or int(r["id"]) in wanted]


def archive_target(params: Mapping[str, Any] | None, chunk_size: int | None = None):
    """The :class:`~voipstudio_provider.engine.archive.ArchiveTarget` of a run, from its params."""
    from voipstudio_provider.engine.archive import ArchiveTarget

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
        ``archived``, ``skipped``, ``failed``, ``bytes``, ``failed_ids`` (bounded),
        ``errors`` (the first few, for people) and ``ledgers`` (ledger objects written).
    """
    from voipstudio_provider.engine.archive import FAILED, archive_batch, s3_client_for, summarize
    from voipstudio_provider.engine.ledger import write_ledger
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
    # Written after the uploads: a ledger line never names an object that is not stored.
    ledgers = write_ledger(s3_client, target, batch, outcomes)
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
        "ledgers": len(ledgers),
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


def id_ranges(
    plan: Mapping[str, Any] | None,
    batches: Sequence[Mapping[str, Any]] | None,
    summaries: Iterable[Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Per kind: the id range the run covered, the mark it was planned with, the new mark."""
    from voipstudio_provider.engine.highwater import advance

    marks = dict((plan or {}).get("marks") or {})
    done: dict[str, dict[tuple[int, int], Mapping[str, Any]]] = {}
    for s in summaries:
        done.setdefault(s["kind"], {})[(int(s["first_id"]), int(s["last_id"]))] = s
    ranges: dict[str, dict[str, Any]] = {}
    for name in sorted(set(marks) | {b["kind"] for b in batches or []}):
        own = [b for b in batches or [] if b["kind"] == name]
        mark = marks.get(name)
        ranges[name] = {
            "first_id": min((int(b["first_id"]) for b in own), default=None),
            "last_id": max((int(b["last_id"]) for b in own), default=None),
            "above_id": mark,
            "mark": advance(mark, own, done.get(name, {})) if batches is not None else mark,
        }
    return ranges


def summarize_run(
    ti,
    batch_task_id: str,
    plan_task_id: str,
    params: Mapping[str, Any],
    *,
    s3_client=None,
    interval: tuple[dt.datetime, dt.datetime] | None = None,
) -> dict:
    """Pull the plan and every batch summary of this run, add them up, and move each kind's
    high-water mark as far as the run archived without a gap.

    :param s3_client: where the marks are written (default: the ``aws_default`` client).
    :param interval: the run's ``(start, end)``: the window named when no plan was written.
    """
    batches = ti.xcom_pull(task_ids=plan_task_id)
    plan = ti.xcom_pull(task_ids=plan_task_id, key=PLAN_KEY)
    summaries = _as_list(ti.xcom_pull(task_ids=batch_task_id, key=BATCH_SUMMARY_KEY))
    bucket, prefix = resolve_bucket_and_prefix(params)
    summary = combine_summaries(batches, summaries, bucket=bucket, prefix=prefix)
    if plan:
        summary["since"], summary["until"] = plan["since"], plan["until"]
    elif interval is not None and summary["since"] is None:
        since, until = archive_window(*interval, params.get("lookback_hours", 0))
        summary["since"], summary["until"] = since.isoformat(), until.isoformat()
    summary["window"] = {"since": summary["since"], "until": summary["until"]}
    summary["id_ranges"] = id_ranges(plan, batches, [s for s in summaries if s])
    if plan:
        from voipstudio_provider.engine.highwater import write_mark

        if s3_client is None:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            s3_client = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()
        for name, covered in summary["id_ranges"].items():
            if covered["mark"] is not None and covered["mark"] != covered["above_id"]:
                write_mark(
                    s3_client,
                    bucket,
                    prefix,
                    name,
                    covered["mark"],
                    dag_id=ti.dag_id,
                    run_id=ti.run_id,
                    window=summary["window"],
                )
    log.info("%s", describe_summary(summary))
    return summary


def plan_archive_run(
    ti,
    params: Mapping[str, Any],
    kinds: Sequence[str],
    data_interval_start: dt.datetime,
    data_interval_end: dt.datetime,
    *,
    voip_hook=None,
    s3_client=None,
) -> list[dict[str, Any]]:
    """The planning task's body: window plus high-water marks, batches returned for
    mapping, the plan pushed as XCom ``plan`` for the summary (also of an empty run)."""
    with fail_on_configuration_error("archive run's params, Variables or connections"):
        if voip_hook is None or s3_client is None:
            check_connections(VOIPSTUDIO_CONN_ID, AWS_CONN_ID)
        since, until = archive_window(
            data_interval_start, data_interval_end, params["lookback_hours"]
        )
        bucket, prefix = resolve_bucket_and_prefix(params)
        resolve_s3_options(params)
    log.info(
        "run window %s .. %s (data interval %s .. %s)",
        since.isoformat(),
        until.isoformat(),
        as_utc(data_interval_start).isoformat(),
        as_utc(data_interval_end).isoformat(),
    )
    if voip_hook is None:
        from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

        voip_hook = VoIPstudioHook(voipstudio_conn_id=VOIPSTUDIO_CONN_ID)
    if s3_client is None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        s3_client = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()
    batches, plan = plan_run(
        voip_hook,
        s3_client,
        kinds,
        since,
        until,
        params["batch_size"],
        bucket=bucket,
        prefix=prefix,
    )
    ti.xcom_push(key=PLAN_KEY, value=plan)
    return batches
