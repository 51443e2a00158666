"""
### Archive VoIPstudio call PCAPs (and optionally SIP traces) to S3

Every day this DAG copies the packet captures of the calls of its window to S3:

- `{prefix}/pcaps/cdrs/date=YYYY-MM-DD/{id}.pcap` for each call detail record (CDR)
- `{prefix}/pcaps/msdrs/date=YYYY-MM-DD/{id}.pcap` for each media-server record (MSDR)
- with `include_traces`, the SIP messages as text beside them: `{id}.trace`

The date is the record's own UTC date (`calldate`, `created_at`). Every file carries its
SHA-256 and size in object metadata.

#### Window

A run covers its data interval, one UTC day from 03:00 to 03:00 (daily runs
abut), started `lookback_hours` earlier for records that reach the API late. What is
already archived and verified is skipped without downloading, so overlapping windows and
re-runs upload nothing new. To archive history, create a backfill:
`airflow backfill create --dag-id voipstudio_archive_pcaps --from-date 2026-06-01
--to-date 2026-06-30`.

Besides its window, every run archives each record whose id is above the kind's
high-water mark (`{prefix}/highwater/{kind}.json`, the highest id archived and verified
without gaps), whatever the record's date: a record that reaches the API days late, or
after an outage of any length, is archived by the next run. The mark moves after each
run as far as it archived without a gap.

#### Tasks

`list_pcaps_to_archive` lists the CDRs and MSDRs of the window once and cuts
them into batches of `batch_size` ids per kind; `archive_pcap_batch` is mapped over them
(named like `cdr_pcaps 1201–1400`), downloading `max_streams` files at a time within the
`voipstudio_api` pool; `summarize_archive` logs and returns the totals.

#### Failures

A call whose capture cannot be archived does not stop the others; its batch
fails at the end naming its ids, and the batch's retries fetch only what is still missing.
`summarize_archive` fails the run naming every record not archived. The asset
`voipstudio_pcaps` gets an event only when the whole window is archived and verified (its
extra holds the summary, the window and the id range per kind; an empty run emits it
too).

#### Params

`bucket`, `prefix` (default: Variables `voipstudio_s3_bucket`,
`voipstudio_s3_prefix`), `lookback_hours`, `batch_size`, `max_streams`, `include_traces`,
and S3 options `sse`, `kms_key_id`, `storage_class`, `object_lock_mode`,
`object_lock_days` (default: Variable `voipstudio_s3_options`, JSON). Connections:
`voipstudio_default`, `aws_default`.

Manual: [Archiving and exporting](http://127.0.0.1:8000/archiving/#archive-dags)
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, dag
from voipstudio_provider.tasks import archive
from voipstudio_provider.tasks.params import dag_params
from voipstudio_provider.tasks.settings import dag_default_args


@dag(
    dag_id="voipstudio_archive_pcaps",
    schedule=CronDataIntervalTimetable("0 3 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    description="Archive CDR and MSDR PCAPs to S3, SHA-256 verified (daily 03:00 UTC)",
    doc_md=__doc__,
    tags=["voipstudio", "archive", "pcaps"],
    default_args=dag_default_args(retry_minutes=5),
    params=dag_params("location", "batches", "traces", "s3_options"),
)
def voipstudio_archive_pcaps():
    archive.declare_archive_tasks(
        plan_task_id="list_pcaps_to_archive",
        batch_task_id="archive_pcap_batch",
        kinds=archive.pcap_kinds,
        asset=archive.PCAPS_ASSET,
    )


voipstudio_archive_pcaps()
