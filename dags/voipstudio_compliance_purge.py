"""
### Compliance purge of VoIPstudio recordings, voicemail and chats (run by hand)

Never scheduled: a person triggers it from the UI form or the REST API. One run plans,
asks a second person to approve, and deletes exactly the approved plan: `plan_purge`
writes the plan; `approve_purge` waits (state *awaiting input*, under Browse → Required
Actions) until someone answers Approve or Reject; only an Approve by someone other than
the person who triggered the run deletes anything.

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
- `dry_run` (default **on**): write the plan only; nobody is asked, nothing is deleted.
- A run with neither `older_than` nor `phone_number` is refused by `plan_purge` at once.
- `require_archive` (default on): delete a recording or voicemail only if its archived
  copy checks out (size, sha256 metadata against the sidecar); chats are archived first.
  Off, items are deleted without an archive.
- `mask_cdrs` (default off): CDRs cannot be deleted one by one; with this on, the number
  is replaced by `masked` in matching CDRs (src, dst, clid and the names repeating it).
- `max_deletions` (default 10000): the most items the purge may delete. When the plan
  holds more, the run fails before anyone is asked (dry run included); read the plan
  and trigger again with a larger value.
- `approval_hours` (default 72): how long the approval request stays open. Without an
  answer by then the run fails, nothing is deleted, and the note says `EXPIRED`.
- `erase_archive` (default off): once the source records are deleted, erase their
  archived copies too, through the connection `aws_erasure` only; held, Object-Locked and
  duty-bound copies (`voipstudio_minimum_keep_days`) are kept, and a record the purge
  kept at the source keeps its archived copies.

Bucket and prefix come from the Variables `voipstudio_s3_bucket` and
`voipstudio_s3_prefix` only; a run cannot point the archive check elsewhere.

#### Approval

The request's subject says what goes (`Purge 42 recordings, 3 voicemails and 17 chat
messages of +44 20 7946 0321?`); its body shows the criteria, counts per resource, held
items and why, the first rows of the plan, the plan's key and SHA-256, who asked and when,
and when the request expires. The Variable `voipstudio_purge_approvers`, JSON such as
`{"users": ["bob", "carol"], "allow_self_approval": false}`, names who may answer; the
person who triggered the run is left out of that list and, if they answer anyway, their
Approve deletes nothing and fails the run, unless `allow_self_approval` is true. Reject
deletes nothing. No option is ever chosen by default.

#### Legal hold

Items held by id or by number (Variable `voipstudio_legal_hold`) are
listed apart in the plan and never deleted or masked.

#### Output

The plan: `{prefix}/audit/voipstudio_compliance_purge/{run_id}.plan.json` (criteria, and
per resource the count, the ids and the held ids), and beside it the same plan to open in
a spreadsheet, `{run_id}.plan.csv`: one row per item with resource, id, date,
matched_number, held (yes/no) and hold_reason. Once approved, `{run_id}.plan.approved.json`
is the plan with who asked, who approved, when, and the plan's digest. The deletion reads
the plan again and deletes only if its bytes hash to the digest the approver was shown.
The audit log, one line per item deleted, masked or kept, with the reason, the archive
key checked, `requested_by`, `approved_by`, `approved_at` and `plan_sha256`:
`{prefix}/audit/voipstudio_compliance_purge/{run_id}.jsonl`.
The archived copies in the bucket are not touched by a purge, unless `erase_archive` is
on: then `{prefix}/audit/erasure/{run_id}.jsonl` has a line per archived object erased or
kept.

#### Tasks

`plan_purge` → `approve_purge` → `purge_planned_records` (mapped over the resources,
pool `voipstudio_api`) → `mask_matching_cdrs` → `erase_archived_copies` (with
`erase_archive`; only records gone from the source); `write_audit_log` joins the audit parts,
also after a failure, and fails the run when it cannot; `fail_if_a_task_failed` runs only
when another task failed, and fails the run; `set_run_note` always runs and sets the run's
note: `DRY RUN: N planned`, `PURGED: N deleted, M kept; approved by <user>` (and
`; N archived copies erased, K kept` with `erase_archive`),
`REJECTED by <user>`, `EXPIRED: ...` or `REFUSED: <why>` (through the connection
`airflow_api` to the API server; without it the note is in its log and XCom). A resource
not among `resources`, `mask_matching_cdrs` with `mask_cdrs` off and
`erase_archived_copies` with `erase_archive` off, end *skipped*.

Manual: [Compliance purge](http://127.0.0.1:8000/deletion/#compliance-purge)
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task
from voipstudio_provider.engine.deletion.approval import DEFAULT_APPROVAL_HOURS
from voipstudio_provider.engine.deletion.deleter import DEFAULT_MAX_DELETIONS
from voipstudio_provider.engine.deletion.purge import PURGE_RESOURCES
from voipstudio_provider.operators.purge_approval import PurgeApprovalOperator
from voipstudio_provider.tasks import erasure, purge, run_notes
from voipstudio_provider.tasks.deletion_run import end_deletion_run
from voipstudio_provider.tasks.params import dag_params
from voipstudio_provider.tasks.settings import API_POOL, dag_default_args


@dag(
    dag_id="voipstudio_compliance_purge",
    schedule=None,
    max_active_runs=1,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    description="Purge by age or phone number: plan, approval by a second person, delete",
    doc_md=__doc__,
    tags=["voipstudio", "retention", "compliance"],
    default_args=dag_default_args(retry_minutes=2),
    params=dag_params(
        resources=Param(
            list(PURGE_RESOURCES),
            type="array",
            items={"type": "string", "enum": list(PURGE_RESOURCES)},
            examples=list(PURGE_RESOURCES),  # the trigger form offers them as a choice
            minItems=1,
            uniqueItems=True,
            title="Resources",
            description="what to purge: monitors (recordings), voicemessages, chatmsgs",
        ),
        older_than=Param(
            None,
            type=["null", "string"],
            format="date",
            title="Older than",
            description="purge records dated before this day (UTC)",
        ),
        phone_number=Param(
            None,
            type=["null", "string"],
            title="Phone number",
            description=(
                "one phone number, with + and country code, e.g. +44 20 7946 0000 (a national "
                "number needs the Variable voipstudio_default_region); only records of "
                "exactly this number match"
            ),
        ),
        dry_run=Param(
            True,
            type="boolean",
            title="Dry run",
            description="plan only: nothing is asked or deleted",
        ),
        require_archive=Param(
            True,
            type="boolean",
            title="Require archive",
            description="delete only what is verified in the archive bucket",
        ),
        mask_cdrs=Param(
            False,
            type="boolean",
            title="Mask CDRs",
            description="replace the phone number by 'masked' in matching CDRs",
        ),
        max_deletions=Param(
            DEFAULT_MAX_DELETIONS,
            type="integer",
            minimum=1,
            title="Max deletions",
            description="most items this purge may delete; a larger plan fails the run "
            "before anything is deleted",
        ),
        approval_hours=Param(
            DEFAULT_APPROVAL_HOURS,
            type="number",
            exclusiveMinimum=0,
            title="Approval hours",
            description="how long the approval request stays open; unanswered, nothing is deleted",
        ),
        erase_archive=Param(
            False,
            type="boolean",
            title="Erase archive",
            description=(
                "also erase the archived copies of the records deleted, through the "
                "aws_erasure connection; held, Object-Locked and duty-bound copies "
                "(voipstudio_minimum_keep_days) are kept"
            ),
        ),
    ),
)
def voipstudio_compliance_purge():
    @task(pool=API_POOL, retries=0)
    def plan_purge(params=None, dag_run=None, ti=None):
        return purge.run_plan(params, dag_run.dag_id, dag_run.run_id, ti=ti)

    # No retries: a second try would ask again, and an answer is final.
    approve_purge = PurgeApprovalOperator(task_id="approve_purge", retries=0)

    @task(
        pool=API_POOL,
        max_active_tis_per_dagrun=1,
        map_index_template="{{ task.op_kwargs.resource }}",
    )
    def purge_planned_records(resource: str, params=None, dag_run=None, ti=None):
        answer = ti.xcom_pull(task_ids="approve_purge")
        return purge.run_purge(resource, params, dag_run, ti.try_number, answer)

    # Runs when at least one resource was purged: after a Reject every one is skipped.
    @task(pool=API_POOL, trigger_rule="none_failed_min_one_success")
    def mask_matching_cdrs(params=None, dag_run=None, ti=None):
        answer = ti.xcom_pull(task_ids="approve_purge")
        return purge.run_masking(params, dag_run, ti.try_number, answer)

    # After the deletion, and only when something was purged: a Reject, an expiry and a
    # dry run skip it with the resources.
    @task(pool=API_POOL, trigger_rule="none_failed_min_one_success")
    def erase_archived_copies(params=None, dag_run=None, ti=None):
        answer = ti.xcom_pull(task_ids="approve_purge")
        return erasure.erase_after_purge(params, dag_run, answer, ti.try_number)

    @task(trigger_rule="all_done", retries=0)
    def set_run_note(params=None, dag_run=None, ti=None):
        plan_summary = ti.xcom_pull(task_ids="plan_purge", key=purge.PLAN_SUMMARY_KEY)
        answer = ti.xcom_pull(task_ids="approve_purge", key=purge.ANSWER_KEY)
        purged = ti.xcom_pull(task_ids="purge_planned_records")
        erased = ti.xcom_pull(task_ids="erase_archived_copies")
        note = purge.purge_note(params, plan_summary, answer, purged, erased)
        return run_notes.set_run_note(dag_run.dag_id, dag_run.run_id, note)

    plan = plan_purge()
    plan >> approve_purge
    purged = purge_planned_records.expand(resource=list(PURGE_RESOURCES))
    approve_purge >> purged
    masked = purged >> mask_matching_cdrs()
    # Downstream of both: with mask_cdrs off the masking is skipped, the purge is not.
    erased = erase_archived_copies()
    [purged, masked] >> erased
    # write_audit_log is the teardown; fail_if_a_task_failed keeps a refused approval, a
    # failed resource or a failed erasure failing the run too.
    end_deletion_run([masked, erased], [plan, approve_purge, purged, masked, erased])
    # Not a direct downstream of approve_purge, whose Reject skips its direct downstream;
    # beside the audit teardown, not after it, so that the teardown stays a leaf.
    [plan, purged, masked, erased] >> set_run_note()


voipstudio_compliance_purge()
