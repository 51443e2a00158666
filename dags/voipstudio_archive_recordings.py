"""
### Archive VoIPstudio call recordings and voicemail to S3

Every hour this DAG copies the call recordings (`monitors`) and voicemail messages
(`voicemessages`) of its window to S3, as MP3 with a JSON sidecar beside each:

- `{prefix}/recordings/date=YYYY-MM-DD/{id}.mp3` and `{id}.json`
- `{prefix}/voicemail/date=YYYY-MM-DD/{id}.mp3` and `{id}.json`

The date is the record's own UTC date (`timestamp`, `origtime`). Every MP3 carries its
SHA-256 and size in object metadata; the sidecar is the API record plus `sha256`, `size`
and `archived_at`.

#### Window

A run covers its data interval `[data_interval_start, data_interval_end)`
(one hour, hourly runs abut) started `lookback_hours` earlier, so recordings that show up
in the API late are still caught by a later run. What is already archived and verified
(size and sha256 agree) is skipped without downloading, so overlapping windows and
re-runs upload nothing new. To archive history, create a backfill:
`airflow backfill create --dag-id voipstudio_archive_recordings --from-date 2026-06-01
--to-date 2026-06-30`.

Besides its window, every run archives each record whose id is above the kind's
high-water mark (`{prefix}/highwater/{kind}.json`, the highest id archived and verified
without gaps), whatever the record's date: a record that reaches the API days late, or
after an outage of any length, is archived by the next run. The mark moves after each
run as far as it archived without a gap.

#### Tasks

`list_recordings_to_archive` lists the window and cuts it into batches of
`batch_size` ids; `archive_recording_batch` is mapped over them (named like
`monitors 1201–1400`), downloading `max_streams` files at a time within the
`voipstudio_api` pool; `summarize_archive` logs and returns the totals.

#### Failures

A record that cannot be archived does not stop the others; its batch fails
at the end naming its ids, and the batch's retries fetch only what is still missing.
`summarize_archive` fails the run naming every record not archived. The asset
`voipstudio_recordings` gets an event only when the whole window is archived and
verified (its extra holds the summary, the window and the id range per kind; an
empty run emits it too); clearing the failed batches re-runs them and
the summary, which then emits it.

#### Params

`bucket`, `prefix` (default: Variables `voipstudio_s3_bucket`,
`voipstudio_s3_prefix`), `lookback_hours`, `batch_size`, `max_streams`, and S3 options
`sse`, `kms_key_id`, `storage_class`, `object_lock_mode`, `object_lock_days` (default:
Variable `voipstudio_s3_options`, JSON). Connections: `voipstudio_default`, `aws_default`.

Manual: [Archiving and exporting](http://127.0.0.1:8000/archiving/#archive-dags)
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, dag
from voipstudio_provider.tasks import archive
from voipstudio_provider.tasks.params import dag_params
from voipstudio_provider.tasks.settings import dag_default_args


@dag(
    dag_id="voipstudio_archive_recordings",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    description="Archive call recordings and voicemail MP3s to S3, SHA-256 verified (hourly)",
    doc_md=__doc__,
    tags=["voipstudio", "archive", "recordings"],
    default_args=dag_default_args(retry_minutes=2),
    params=dag_params("location", "batches", "s3_options"),
)
def voipstudio_archive_recordings():
    archive.declare_archive_tasks(
        plan_task_id="list_recordings_to_archive",
        batch_task_id="archive_recording_batch",
        kinds=archive.recording_kinds,
        asset=archive.RECORDINGS_ASSET,
    )


voipstudio_archive_recordings()
