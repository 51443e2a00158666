"""The archive DAGs' steps: plan a window in batches, archive one batch, sum up a run.

``voipstudio_archive_recordings`` and ``voipstudio_archive_pcaps`` are three tasks each:
a planning task lists the window and returns small batch descriptions (id ranges, never
records), a mapped task archives one batch with parallel streams, and a summary task adds
the batches up. The functions here are those tasks' bodies, so the DAG files are wiring
only; the planning and the archiving are in :mod:`voipstudio_provider.engine.archive.batches`.
Heavy imports (the hooks, boto3) happen inside them, so the DAG folder parses fast.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow.sdk import Asset, task
from airflow.sdk.exceptions import AirflowException

from voipstudio_provider.endpoints import as_utc
from voipstudio_provider.engine.archive.batches import (
    archive_planned_batch,
    archive_window,
    combine_summaries,
    describe_summary,
    id_ranges,
    plan_run,
)
from voipstudio_provider.engine.summaries import BATCH_SUMMARY_KEY, push_summary
from voipstudio_provider.tasks.settings import (
    API_POOL,
    AWS_CONN_ID,
    VOIPSTUDIO_CONN_ID,
    archive_target,
    check_connections,
    fail_on_configuration_error,
    resolve_bucket_and_prefix,
    resolve_s3_options,
    run_interval,
)

log = logging.getLogger(__name__)

RECORDING_KINDS = ("monitors", "voicemessages")
PCAP_KINDS = ("cdr_pcaps", "msdr_pcaps")
TRACE_KINDS = ("cdr_traces", "msdr_traces")

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


def recording_kinds(params: Mapping[str, Any]) -> tuple[str, ...]:
    """What ``voipstudio_archive_recordings`` archives: call recordings and voicemail."""
    return RECORDING_KINDS


def pcap_kinds(params: Mapping[str, Any]) -> tuple[str, ...]:
    """What ``voipstudio_archive_pcaps`` archives: the PCAPs, and the SIP traces when the
    run's ``include_traces`` asks for them."""
    return PCAP_KINDS + (TRACE_KINDS if params["include_traces"] else ())


class ArchiveIncompleteError(AirflowException):
    """Some records of a batch or a run could not be archived; their ids are in the message."""


def declare_archive_tasks(
    *,
    plan_task_id: str,
    batch_task_id: str,
    kinds: Callable[[Mapping[str, Any]], Sequence[str]],
    asset: Asset,
) -> None:
    """Declare an archive DAG's three tasks, inside its ``@dag`` function, and wire them.

    ``plan_task_id`` plans the window (:func:`plan_archive_run`), ``batch_task_id`` is
    mapped over its batches (:func:`archive_batch_task`), and ``summarize_archive`` sums the
    run up whatever the batches did (:func:`summarize_archive_task`) and emits ``asset``.

    :param kinds: the kinds a run archives, from its params.
    """

    @task(task_id=plan_task_id, pool=API_POOL)
    def plan(params=None, ti=None):
        return plan_archive_run(ti, params, kinds(params), *run_interval())

    @task(task_id=batch_task_id, pool=API_POOL, map_index_template=BATCH_NAME_TEMPLATE)
    def archive_batch(batch: dict, params=None, ti=None):
        keep_batch_name_on_retry()
        archive_batch_task(batch, params, ti)

    @task(task_id="summarize_archive", trigger_rule="all_done", retries=0, outlets=[asset])
    def summarize_archive(params=None, ti=None, outlet_events=None):
        summarize_archive_task(
            params,
            ti,
            outlet_events,
            asset,
            batch_task_id=batch_task_id,
            plan_task_id=plan_task_id,
        )

    archive_batch.expand(batch=plan()) >> summarize_archive()


def keep_batch_name_on_retry() -> None:
    """Make this task process report a retry with the try's rendered map index.

    Airflow 3.3's task runner builds the ``up_for_retry`` message without the name the try
    rendered (the ``failed`` and ``success`` messages carry it), and the execution API then
    writes ``None`` on the finished try and on the instance waiting for its retry: the grid
    shows ``0`` and ``.../tries`` an unnamed try. The runner looks the builder up when a try
    fails, so wrapping it here, in the process that runs this batch, names that retry too.
    """
    from airflow.sdk.execution_time import task_runner

    build = getattr(task_runner, "_finalize_task_failure", None)
    # A name is worth no failed batch: a runner without this builder is left as it is.
    if build is None or getattr(build, "keeps_map_index", False):
        return

    def finalize_task_failure(ti, *args, **kwargs):
        msg, state = build(ti, *args, **kwargs)
        if isinstance(msg, task_runner.RetryTask) and msg.rendered_map_index is None:
            msg.rendered_map_index = ti.rendered_map_index
        return msg, state

    finalize_task_failure.keeps_map_index = True
    task_runner._finalize_task_failure = finalize_task_failure


def archive_one_batch(
    batch: Mapping[str, Any],
    target,
    *,
    max_streams: int = 4,
    voipstudio_conn_id: str = VOIPSTUDIO_CONN_ID,
    aws_conn_id: str = AWS_CONN_ID,
) -> dict[str, Any]:
    """Archive every record of one batch through the connections
    (:func:`~voipstudio_provider.engine.archive.batches.archive_planned_batch`).

    :param batch: one item of :func:`~voipstudio_provider.engine.archive.batches.plan_batches`.
    :param target: where to write (:func:`archive_target`).
    :param max_streams: parallel downloads and uploads inside the batch.
    :param voipstudio_conn_id: the VoIPstudio connection.
    :param aws_conn_id: the Amazon provider's connection for S3.
    :return: the batch summary (see
        :func:`~voipstudio_provider.engine.archive.batches.archive_planned_batch`).
    """
    from voipstudio_provider.engine.archive.targets import s3_client_for
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook
    from voipstudio_provider.tasks.settings import load_default_region

    region = load_default_region()
    voip_hook = VoIPstudioHook(voipstudio_conn_id=voipstudio_conn_id)
    s3_client = s3_client_for(aws_conn_id, max_streams)
    return archive_planned_batch(
        voip_hook, s3_client, batch, target, max_streams=max_streams,
        regions=(region,) if region else (),
    )  # fmt: skip


def archive_batch_task(batch: Mapping[str, Any], params: Mapping[str, Any], ti) -> None:
    """A mapped archive task's body: archive the batch, push its summary as XCom
    ``batch_summary``, then fail naming what was not archived."""
    summary = archive_one_batch(batch, archive_target(params), max_streams=params["max_streams"])
    push_summary(ti, summary, key=BATCH_SUMMARY_KEY)
    raise_if_batch_failed(summary)


def summarize_archive_task(
    params: Mapping[str, Any],
    ti,
    outlet_events,
    asset: Asset,
    *,
    batch_task_id: str,
    plan_task_id: str,
) -> None:
    """The summary task's body: sum the run up (:func:`summarize_run`), push it as XCom
    ``summary``, fail unless the whole window is archived, else put it on the asset event."""
    summary = summarize_run(ti, batch_task_id, plan_task_id, params, interval=run_interval())
    push_summary(ti, summary)
    raise_if_run_incomplete(summary)
    outlet_events[asset].extra = summary


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
        from voipstudio_provider.engine.archive.highwater import write_mark

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
