"""
### Reconcile the VoIPstudio source with the S3 archive, and write the daily manifests

Every day at 05:00 UTC, after the archive, export and retention DAGs, this DAG compares
what the API holds with what the bucket holds, day by day over the retention period
(`days`, default 365, or `from_date` .. `to_date`): recordings, voicemail, CDR and MSDR
PCAPs, per-user CSVs and archived chats.

#### Findings

- `missing`: a source record whose archive object is absent;
- `unverified`: the object differs from what the archive wrote (size, ETag, sidecar);
- `orphaned`: an archived object whose source record is gone with no audit line saying it
  was deleted, or an object the archive never wrote.

The report is `{prefix}/reconciliation/date=YYYY-MM-DD/report.json` (counts per resource
and finding, and every gap's id); the log and XCom hold a short summary.

#### Tasks

`reconcile_archive` lists source and bucket by day (one LIST per 1,000 keys), re-archives
missing and unverified binaries through the archive DAGs' own batch step when `rearchive`
is on, writes the report and the manifest of every complete day before the run's day.
`verify_manifests` checks the chain of the range (and every object with `verify_objects`).
`check_gaps` fails the run when a gap older than `gap_hours` (default 24) remains, so
Airflow's failure callbacks and e-mail alert an operator.

`sync_legal_holds` makes every archived copy of a record under `voipstudio_legal_hold`
(by id, or by number through the subject index) S3-Object-Lock legal-held, lifts the hold
from released ones, reports and fixes drift, and audits each change under
`{prefix}/audit/legal-hold/`; with `backfill_index` it first indexes objects archived
before the subject index existed. `check_holds` fails the run when holds are set but the
bucket has no Object Lock. `erase_due_copies` erases archived copies that an erasure had
to keep until a date (Object Lock retention, `voipstudio_minimum_keep_days`) once it has
passed, through the `aws_erasure` connection. Their params are `sync_holds` (default on)
and `backfill_index`; their connections `aws_legal_hold` (the role that sets and lifts
legal holds, needed once a hold is set) and `aws_erasure` (needed while copies wait).

#### Params

`bucket`, `prefix`, `from_date`, `to_date`, `days`, `rearchive`, `gap_hours`,
`verify_objects`. Connections: `voipstudio_default`, `aws_default`.

Manual: [Proving the archive](http://127.0.0.1:8000/proving/#reconciliation)
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, dag, task
from voipstudio_provider.engine.summaries import push_summary
from voipstudio_provider.tasks import erasure, holds, reconcile
from voipstudio_provider.tasks.params import dag_params
from voipstudio_provider.tasks.settings import (
    API_POOL,
    dag_default_args,
    run_interval,
)


@dag(
    dag_id="voipstudio_reconcile",
    schedule=CronDataIntervalTimetable("0 5 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    description="Compare source and archive daily, report gaps, write chained manifests",
    doc_md=__doc__,
    tags=["voipstudio", "archive", "reconciliation"],
    default_args=dag_default_args(retry_minutes=10),
    params=dag_params("location", **reconcile.reconcile_params(), **holds.hold_params()),
)
def voipstudio_reconcile():
    @task(pool=API_POOL)
    def reconcile_archive(params=None, ti=None):
        summary = reconcile.reconcile_task(params, run_interval()[1])
        push_summary(ti, summary)
        return summary

    @task(retries=0)
    def verify_manifests(summary: dict, params=None):
        reconcile.verify_task(params, summary)

    @task(retries=0)
    def check_gaps(summary: dict, params=None):
        reconcile.raise_if_overdue(summary, params["gap_hours"])

    @task(retries=0)
    def sync_legal_holds(params=None, run_id=None):
        return holds.sync_legal_holds_task(params, run_id)

    @task(retries=0)
    def check_holds(report: dict):
        holds.raise_on_findings(report)

    @task
    def erase_due_copies(run_id=None):
        return erasure.erase_due_copies(run_id)

    summary = reconcile_archive()
    held = sync_legal_holds()
    check_holds(held)
    erased = erase_due_copies()
    held >> erased >> verify_manifests(summary)
    check_gaps(summary)


voipstudio_reconcile()
