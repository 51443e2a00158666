"""
### Export each user's CDRs of a day as CSV to S3

Every day this DAG writes, for every user with calls on the exported UTC day plus every
user listed in the Variable `voipstudio_export_user_ids` (a JSON list such as
`[1001, 1004]`), that user's call detail records of the day as CSV:

- `{prefix}/cdr-csv/user_id={user}/date=YYYY-MM-DD/cdrs.csv`

The file is built from the user's CDR records (`GET /cdrs` filtered by `user_id` and the
day's `calldate`, keyset-paged), not downloaded from `/users/{id}/cdrs.csv`: VoIPstudio
answers that endpoint with a queued export job (202), not a file. Columns: every CDR field
of the History reference in its order, then any further field the API sent, by name;
lists and objects are JSON in their cell. Rows are in `calldate`, then `id` order.

A listed user without calls gets a header-only file, so an empty day is never mistaken
for a failed one. Each file's row count is checked against the API's `total` for that
user and day before it is uploaded; the object carries `sha256`, `size` and `rows`
metadata. A re-run writes the day's files again (the export is a snapshot of the day).

#### Day

Runs are scheduled at 03:00 UTC with a one-day data interval (daily runs abut);
a run exports the UTC day before its interval's end, e.g. the run of the interval ending
2026-11-20 03:00 exports 2026-11-19, three hours after midnight so that late calls are in.
A run created without a logical date (REST API, UI) exports the UTC day before the
day it was triggered (its `run_after`). The `day` param (`YYYY-MM-DD`) exports another
day. To export history, create a backfill: `airflow backfill create --dag-id
voipstudio_export_user_cdrs --from-date 2026-06-01 --to-date 2026-06-30`.

#### Tasks

`list_users_to_export` finds the users and cuts them into groups of
`users_per_batch`; `export_user_cdrs_batch` is mapped over the groups (named like
`users 1001–1006`) within the `voipstudio_api` pool; `summarize_export` logs the totals.
A user that fails does not stop the others; the run fails naming the failed users, and
the asset `voipstudio_cdr_csv` gets an event only when every user's file was written.

#### Params

`bucket`, `prefix` (default: Variables `voipstudio_s3_bucket`,
`voipstudio_s3_prefix`), `day`, `users_per_batch`. Connections: `voipstudio_default`,
`aws_default`.

Manual: [CDR CSV export](http://127.0.0.1:8000/archiving/#cdr-csv-export)
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task
from voipstudio_provider.engine.summaries import BATCH_SUMMARY_KEY, push_summary
from voipstudio_provider.tasks import export
from voipstudio_provider.tasks.params import dag_params
from voipstudio_provider.tasks.settings import (
    API_POOL,
    AWS_CONN_ID,
    VOIPSTUDIO_CONN_ID,
    check_connections,
    dag_default_args,
    fail_on_configuration_error,
    load_export_user_ids,
    resolve_bucket_and_prefix,
)


@dag(
    dag_id="voipstudio_export_user_cdrs",
    schedule=CronDataIntervalTimetable("0 3 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=4,
    description="Export each user's CDRs of a UTC day as CSV to S3 (daily 03:00 UTC)",
    doc_md=__doc__,
    tags=["voipstudio", "export", "cdrs"],
    default_args=dag_default_args(retry_minutes=5),
    params=dag_params(
        "location",
        day=Param(
            None,
            type=["null", "string"],
            format="date",
            title="Day",
            description="the UTC day to export (default: the day before the interval's end)",
        ),
        users_per_batch=Param(
            25, type="integer", minimum=1, title="Users per batch", description="per mapped task"
        ),
    ),
)
def voipstudio_export_user_cdrs():
    @task(pool=API_POOL)
    def list_users_to_export(params=None, ti=None, dag_run=None, data_interval_end=None):
        with fail_on_configuration_error("export's params, Variables or connections"):
            # A run without a logical date exports the UTC day before its run_after.
            day = export.export_day(data_interval_end or dag_run.run_after, params["day"])
            listed = load_export_user_ids()
            resolve_bucket_and_prefix(params)
            check_connections(VOIPSTUDIO_CONN_ID, AWS_CONN_ID)
        ti.xcom_push(key="day", value=day.isoformat())
        return export.plan_user_batches(day, listed, params["users_per_batch"])

    @task(pool=API_POOL, map_index_template=export.BATCH_NAME_TEMPLATE)
    def export_user_cdrs_batch(user_ids: list[int], params=None, ti=None):
        day = dt.date.fromisoformat(ti.xcom_pull(task_ids="list_users_to_export", key="day"))
        bucket, prefix = resolve_bucket_and_prefix(params)
        summary = export.export_user_batch(user_ids, day, bucket, prefix)
        push_summary(ti, summary, key=BATCH_SUMMARY_KEY)
        export.raise_if_users_failed(summary)

    @task(trigger_rule="all_done", retries=0, outlets=[export.CDR_CSV_ASSET])
    def summarize_export(params=None, ti=None, outlet_events=None):
        summary = export.summarize_run(ti, "export_user_cdrs_batch", "list_users_to_export", params)
        push_summary(ti, summary)
        export.raise_if_export_incomplete(summary)
        outlet_events[export.CDR_CSV_ASSET].extra = summary

    export_user_cdrs_batch.expand(user_ids=list_users_to_export()) >> summarize_export()


voipstudio_export_user_cdrs()
