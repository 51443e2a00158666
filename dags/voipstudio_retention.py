"""
### Delete VoIPstudio recordings, voicemail and chat messages past retention

Every day this DAG deletes **at the source** (the VoIPstudio account) the call recordings
(`monitors`), voicemail (`voicemessages`) and chat messages (`chatmsgs`) older than the
retention policy allows, but only what is safely archived and not under legal hold.

#### Policy

Variable `voipstudio_retention_policy`, JSON of days to keep per resource, e.g.
`{"monitors": 365, "voicemessages": 90, "chatmsgs": 365}`; `null` keeps a resource
forever; an optional `"max_deletions": {"monitors": 500}` caps each resource per run.
**Until the Variable is set, every run is a dry run** that deletes nothing and says so.
A record is past retention when its own date (`timestamp`, `origtime`, `created_at`) is
earlier than `min(data_interval_end, now)` minus those days; every record is checked
against it again before it is deleted (an unreadable date keeps it).

#### Legal hold

Variable `voipstudio_legal_hold`, JSON
`{"ids": {"monitors": [..], "voicemessages": [..], "chatmsgs": [..], "chats": [..]},
"numbers": ["+44 20 7946 0000"]}`, read again before every deleting batch. Held ids,
every record involving a held number (caller, called, caller id; a chat's visitor fields
or any of its messages) and every message of a held chat are never deleted. Numbers
compare as E.164 (national ones read in the Variable `voipstudio_default_region`); an
entry that is not one valid number fails the run.

#### Archive check

Before deleting, each task probes the bucket (write, head with checksum, read back); a
failed probe deletes nothing. A recording or voicemail is deleted only when S3's own
checksum of its archived copy proves the bytes (see the README); what cannot be verified
is kept and audited, `archive_unverifiable` when the bucket gives no checksum.

#### Safety rails

`max_deletions` (default 10000) per resource and run; when it is spent the walk stops,
one audit line says how many were left, and the task **fails** after writing its audit
so that the run shows red. `dry_run` deletes nothing. Every delete request is preceded by
a write-ahead intent in S3 and confirmed by asking for exactly its ids.

#### Audit

`{prefix}/audit/voipstudio_retention/{run_id}.jsonl`, one line per item.

#### Tasks

`read_retention_policy` checks both Variables and computes the cutoffs;
`settle_earlier_runs` settles, before anything is deleted, what any earlier run of this DAG
or of the compliance purge left when its process died (pending delete intents are asked of
the source, their lines written, marked `recovered_by`, into that run's audit object, which
is joined and finished);
`delete_expired_records` is mapped over the resources (pool `voipstudio_api`, one at a
time; a resource the policy keeps forever ends *skipped*); `write_audit_log` reconciles
what an interrupted attempt left and joins the audit parts even when a resource task
failed, and fails the run when it cannot;
`fail_if_a_task_failed` runs only when another task failed, and fails the run.

#### Params

`dry_run`, `max_deletions`. Bucket and prefix come from the Variables
`voipstudio_s3_bucket` and `voipstudio_s3_prefix` only. Connections:
`voipstudio_default`, `aws_default`.

Manual: [Retention](http://127.0.0.1:8000/deletion/#retention)
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task
from voipstudio_provider.tasks import retention
from voipstudio_provider.tasks.deletion_run import end_deletion_run, settle_before_deleting
from voipstudio_provider.tasks.params import dag_params
from voipstudio_provider.tasks.settings import (
    API_POOL,
    dag_default_args,
    fail_on_configuration_error,
    run_interval,
)


@dag(
    dag_id="voipstudio_retention",
    schedule=CronDataIntervalTimetable("0 4 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    description="Delete what is past retention and verified in the archive (daily 04:00 UTC)",
    doc_md=__doc__,
    tags=["voipstudio", "retention", "compliance"],
    default_args=dag_default_args(retry_minutes=5),
    params=dag_params(
        dry_run=Param(
            False, type="boolean", title="Dry run", description="delete nothing; report only"
        ),
        max_deletions=Param(
            retention.DEFAULT_MAX_DELETIONS,
            type="integer",
            minimum=0,
            title="Max deletions",
            description="most items one run deletes of each resource",
        ),
    ),
)
def voipstudio_retention():
    @task(retries=0)
    def read_retention_policy():
        with fail_on_configuration_error("retention policy or legal hold Variable"):
            return retention.retention_windows(run_interval()[1])

    @task(
        pool=API_POOL,
        max_active_tis_per_dagrun=1,
        map_index_template="{{ task.op_kwargs.window.resource }}",
    )
    def delete_expired_records(window: dict, params=None, dag_run=None, ti=None):
        return retention.run_retention(
            window,
            params=params,
            dag_id=dag_run.dag_id,
            run_id=dag_run.run_id,
            try_number=ti.try_number,
        )

    @task(pool=API_POOL)
    def settle_earlier_runs(dag_run=None):
        return settle_before_deleting(dag_run.dag_id, dag_run.run_id)

    windows = read_retention_policy()
    settled = settle_earlier_runs()
    deleted = delete_expired_records.expand(window=windows)
    # Nothing is deleted before what earlier runs left is settled.
    windows >> settled >> deleted
    # write_audit_log is the teardown; fail_if_a_task_failed keeps a failed resource
    # failing the run too.
    end_deletion_run(deleted, [windows, settled, deleted])


voipstudio_retention()
