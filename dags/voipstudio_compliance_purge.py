"""
### Compliance purge of VoIPstudio recordings, voicemail and chats (run by hand)

Never scheduled: a person triggers it from the UI form. A **dry run** writes a plan of
what matches. A confirmed run (`dry_run` off, `confirm` exactly `PURGE`, `plan_run_id`
the dry run's run id) executes that reviewed plan: it deletes only planned ids that still
match, are not held and are verified.

#### Form

- `resources`: any of `monitors` (call recordings), `voicemessages`, `chatmsgs`.
- `older_than`: a date; records dated before that UTC day match.
- `phone_number`: one valid phone number, best with + and its country code
  (`+44 20 7946 0000`); a national form (`020 7946 0000`) needs the Variable
  `voipstudio_default_region`. Records involving exactly that number match, in any
  notation: a recording or voicemail by its caller, called or caller id; a chat by its
  visitor's name or e-mail or any of its messages (then every message of the chat).
  Numbers that only share trailing digits never match; the plan lists the number text
  that matched in each record.
- Give `older_than`, `phone_number` or both; with both, a record must match both.
- `dry_run` (default **on**): plan and report only.
- `confirm`: type `PURGE` to delete. Anything else (`purge`, `PURGE `) deletes nothing
  and fails the run.
- A run with neither `older_than` nor `phone_number` is refused by `plan_purge` at once.
- `require_archive` (default on): delete a recording or voicemail only if its archived
  copy checks out (size, sha256 metadata against the sidecar); chats are archived first.
  Off, items are deleted without an archive.
- `mask_cdrs` (default off): CDRs cannot be deleted one by one; with this on, the number
  is replaced by `masked` in matching CDRs (src, dst, clid and the names repeating it).
- `max_deletions` (default 10000): the most items the purge may delete. When the plan
  holds more, the run fails before deleting anything (dry run included); read the plan
  and trigger again with a larger value.
- `plan_run_id`: for a confirmed purge, the run id of the dry run whose plan you
  reviewed. The plan must be at most 72 hours old, unchanged (its digest is checked) and
  made with the same `resources`, `older_than`, `phone_number`, `require_archive` and
  `mask_cdrs`; otherwise the run fails before any request.

Bucket and prefix come from the Variables `voipstudio_s3_bucket` and
`voipstudio_s3_prefix` only; a run cannot point the archive check elsewhere.

#### Legal hold

Items held by id or by number (Variable `voipstudio_legal_hold`) are
listed apart in the plan and never deleted or masked.

#### Output

The plan: `{prefix}/audit/voipstudio_compliance_purge/{run_id}.plan.json` (criteria, and
per resource the count, the ids and the held ids; a confirmed run keeps a copy of the
reviewed plan under its own run id, naming the dry run it came from), and beside it the
same plan to open in a spreadsheet, `{run_id}.plan.csv`: one row per item with resource,
id, date, matched_number, held (yes/no) and hold_reason.
The audit log, one line per item deleted, masked or kept, with the reason and the
archive key checked: `{prefix}/audit/voipstudio_compliance_purge/{run_id}.jsonl`.
The archived copies in the bucket are not touched by a purge.

#### Tasks

`plan_purge` → `check_confirmation` → `purge_planned_records` (mapped over the
resources, pool `voipstudio_api`) → `mask_matching_cdrs`; `write_audit_log` joins the
audit parts, also after a failure, and fails the run when it cannot;
`fail_if_a_task_failed` runs only when another task failed, and fails the run;
`set_run_note` always runs and sets the run's note: `DRY RUN: N planned`,
`REFUSED: <why>` or `PURGED: N deleted, M kept` (through the connection `airflow_api`
to the API server; without it the note is in its log and XCom). A resource not among
`resources`, and `mask_matching_cdrs` with `mask_cdrs` off, end *skipped*.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task
from voipstudio_provider.engine.deletion import DEFAULT_MAX_DELETIONS
from voipstudio_provider.tasks import purge, run_notes
from voipstudio_provider.tasks.deletion_run import end_deletion_run
from voipstudio_provider.tasks.settings import API_POOL, dag_default_args


@dag(
    dag_id="voipstudio_compliance_purge",
    schedule=None,
    max_active_runs=1,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    description="Purge by age or phone number: plan, then delete if confirmed with PURGE",
    doc_md=__doc__,
    tags=["voipstudio", "retention", "compliance"],
    default_args=dag_default_args(retry_minutes=2),
    params={
        "resources": Param(
            list(purge.PURGE_RESOURCES),
            type="array",
            items={"type": "string", "enum": list(purge.PURGE_RESOURCES)},
            examples=list(purge.PURGE_RESOURCES),  # the trigger form offers them as a choice
            minItems=1,
            uniqueItems=True,
            title="Resources",
            description="what to purge: monitors (recordings), voicemessages, chatmsgs",
        ),
        "older_than": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Older than",
            description="purge records dated before this day (UTC)",
        ),
        "phone_number": Param(
            None,
            type=["null", "string"],
            title="Phone number",
            description=(
                "one phone number, with + and country code, e.g. +44 20 7946 0000 (a national "
                "number needs the Variable voipstudio_default_region); only records of "
                "exactly this number match"
            ),
        ),
        "dry_run": Param(True, type="boolean", title="Dry run", description="plan only"),
        # Nullable, so that the form lets a dry run go with the field left empty.
        "confirm": Param(
            None,
            type=["null", "string"],
            title="Confirm",
            description=(
                "Type PURGE to delete the planned records at the source (with Dry run off). "
                "Anything else: a dry run that only writes the plan."
            ),
        ),
        "require_archive": Param(
            True,
            type="boolean",
            title="Require archive",
            description="delete only what is verified in the archive bucket",
        ),
        "mask_cdrs": Param(
            False,
            type="boolean",
            title="Mask CDRs",
            description="replace the phone number by 'masked' in matching CDRs",
        ),
        "max_deletions": Param(
            DEFAULT_MAX_DELETIONS,
            type="integer",
            minimum=1,
            title="Max deletions",
            description="most items this purge may delete; a larger plan fails the run "
            "before anything is deleted",
        ),
        # Nullable, so that the form lets a dry run go with the field left empty.
        "plan_run_id": Param(
            None,
            type=["null", "string"],
            title="Plan run id",
            description="a confirmed purge executes the plan of this dry run (its run id)",
        ),
    },
)
def voipstudio_compliance_purge():
    @task(pool=API_POOL, retries=0)
    def plan_purge(params=None, dag_run=None, ti=None):
        return purge.run_plan(params, dag_run.dag_id, dag_run.run_id, ti=ti)

    @task(retries=0)
    def check_confirmation(plan_summary: dict, params=None):
        return purge.check_confirmation(params, plan_summary)

    @task(
        pool=API_POOL,
        max_active_tis_per_dagrun=1,
        map_index_template="{{ task.op_kwargs.resource }}",
    )
    def purge_planned_records(resource: str, params=None, dag_run=None, ti=None):
        return purge.run_purge(resource, params, dag_run.dag_id, dag_run.run_id, ti.try_number)

    @task(pool=API_POOL, trigger_rule="none_failed")
    def mask_matching_cdrs(params=None, dag_run=None, ti=None):
        return purge.run_masking(params, dag_run.dag_id, dag_run.run_id, ti.try_number)

    @task(trigger_rule="all_done", retries=0)
    def set_run_note(params=None, dag_run=None, ti=None):
        plan_summary = ti.xcom_pull(task_ids="plan_purge")
        purged = ti.xcom_pull(task_ids="purge_planned_records")
        note = purge.purge_note(params, plan_summary, purged)
        return run_notes.set_run_note(dag_run.dag_id, dag_run.run_id, note)

    plan = plan_purge()
    resources = check_confirmation(plan)
    purged = purge_planned_records.expand(resource=resources)
    masked = purged >> mask_matching_cdrs()
    # write_audit_log is the teardown; fail_if_a_task_failed keeps a refused confirmation
    # or a failed resource failing the run too.
    end_deletion_run(masked, [plan, resources, purged, masked])
    # Beside the audit teardown, not after it, so that the teardown stays a leaf.
    [plan, resources, purged, masked] >> set_run_note()


voipstudio_compliance_purge()
