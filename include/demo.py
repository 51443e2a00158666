"""``make demo``: run every VoIPstudio DAG once against a local sandbox and S3, then report.

Starts the VoIPstudio sandbox and a SeaweedFS S3 server on loopback (data in ``.demo/``),
prepares an Airflow home in ``.airflow/`` (SQLite), runs the DAGs once each with
``dag.test()`` (as ``airflow dags test`` does, without task retries) and prints what they
archived, exported, deleted and kept, and where it is in the bucket. The compliance purge
waits for approval by a second person: the demo user ``bob`` answers it through Airflow's
API (``voipstudio_demo.approve``), and the report says who asked and who approved. Everything it
started is stopped at the end, also on Ctrl-C.

Set ``VOIPSTUDIO_DEMO_DIR`` to create ``.demo/`` and ``.airflow/`` somewhere else than the
repository.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "plugins")]

from voipstudio_demo.report import (  # noqa: E402
    approval_lines,
    audit_lines,
    bucket_lines,
    csv_lines,
    note_lines,
    run_summary_lines,
)
from voipstudio_demo.stack import APPROVER, BUCKET, PREFIX, REPO, DemoStack  # noqa: E402

HISTORY_HOURS = 181 * 24  # the sandbox holds 180 days of calls
RETENTION_DAYS = 150


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def _busiest_number(monitors: list[dict]) -> str:
    numbers = collections.Counter(m["caller"] for m in monitors if m.get("caller"))
    return numbers.most_common(1)[0][0]


def run(stack: DemoStack) -> int:
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    logical_date = today.isoformat()
    # The recordings runs cover the current hour too: nothing is left above their
    # high-water mark, so the second run over the same window has nothing new to fetch.
    this_hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    recordings_date = (this_hour + dt.timedelta(hours=1)).isoformat()
    print(f"Starting the VoIPstudio sandbox and SeaweedFS in {stack.demo_dir} ...", flush=True)
    stack.start()
    users = [u["id"] for u in stack.sandbox.control("GET", "records/users")["data"]]
    monitors = stack.sandbox.control("GET", "records/monitors")["data"]
    oldest_monitor = monitors[0]["id"]  # ids grow with time
    variables: dict[str, object] = {
        "voipstudio_s3_bucket": BUCKET,
        "voipstudio_s3_prefix": PREFIX,
        "voipstudio_export_user_ids": users,
        "voipstudio_retention_policy": {
            "monitors": RETENTION_DAYS,
            "voicemessages": RETENTION_DAYS,
            "chatmsgs": RETENTION_DAYS,
        },
        "voipstudio_legal_hold": {"ids": {"monitors": [oldest_monitor]}},
    }
    print(f"Preparing the Airflow home {stack.airflow_home} (SQLite) ...", flush=True)
    stack.prepare_airflow(variables)

    recordings = {"lookback_hours": HISTORY_HOURS, "batch_size": 50}
    steps = [
        ("voipstudio_archive_recordings", recordings, "archive-recordings"),
        ("voipstudio_archive_pcaps", {"lookback_hours": HISTORY_HOURS, "batch_size": 100},
         "archive-pcaps"),
        ("voipstudio_export_user_cdrs", {}, "export-user-cdrs"),
        ("voipstudio_retention", {"dry_run": False}, "retention"),
    ]  # fmt: skip
    results = []
    for dag_id, conf, label in steps:
        print(f"Running {dag_id} ...", flush=True)
        when = recordings_date if dag_id == "voipstudio_archive_recordings" else logical_date
        results.append(stack.run_dag(dag_id, when, conf, variables, label))

    remaining = stack.sandbox.control("GET", "records/monitors")["data"]
    number = _busiest_number(remaining)
    # A purge for one caller: one run plans it, a second person approves it in Airflow
    # (the demo's approver answers the request through Airflow's API), then it deletes.
    purge = {"resources": ["monitors", "voicemessages"], "phone_number": number,
             "dry_run": False}  # fmt: skip
    print(f"Running voipstudio_compliance_purge for {number}; {APPROVER} approves ...", flush=True)
    results.append(
        stack.run_dag_answered(
            "voipstudio_compliance_purge", logical_date, purge, variables, "purge"
        )
    )
    print("Running voipstudio_archive_recordings again over the same window ...", flush=True)
    again = stack.run_dag(
        "voipstudio_archive_recordings", recordings_date, recordings, variables, "archive-again"
    )
    results.append(again)
    # The days both archive windows cover completely; CSVs were exported for one day only.
    reconcile = {
        "from_date": (today - dt.timedelta(days=30)).date().isoformat(),
        "to_date": (today - dt.timedelta(days=2)).date().isoformat(),
        "resources": ["monitors", "voicemessages", "cdr_pcaps", "msdr_pcaps", "chats"],
    }
    print("Running voipstudio_reconcile over the last four weeks ...", flush=True)
    results.append(
        stack.run_dag("voipstudio_reconcile", logical_date, reconcile, variables, "reconcile")
    )

    print_report(stack, results, number, oldest_monitor)
    return 0 if all(r.ok for r in results) else 1


def print_report(stack: DemoStack, results, number: str, held_monitor: int) -> None:
    s3 = stack.seaweed.client()
    by_label = {r.label: r for r in results}
    print()
    print("=" * 78)
    print("VoIPstudio demo report")
    print("=" * 78)
    print(f"Sandbox API: {stack.sandbox.base_url} (seed 1, 180 days of calls)")
    print(f"S3 (SeaweedFS): {stack.seaweed.endpoint_url}, bucket s3://{BUCKET}/{PREFIX}/")
    print("DAG runs (logs in .demo/logs/):")
    for r in results:
        state = "success" if r.ok else "FAILED"
        print(f"  {r.label:<20} {r.dag_id:<32} {state:<8} {r.log_path.name}")

    print("\nWhat is in the bucket now:")
    for line in bucket_lines(s3, BUCKET, PREFIX):
        print(line)

    print("\nArchived (voipstudio_archive_recordings, voipstudio_archive_pcaps):")
    for label in ("archive-recordings", "archive-pcaps"):
        for line in run_summary_lines(by_label[label].log_text()):
            print(line)
    print("  Run again over the same window: nothing is downloaded again, because every")
    print("  archived file is verified (size and sha256 metadata) and skipped:")
    for line in run_summary_lines(by_label["archive-again"].log_text())[:1]:
        print(line)

    print("\nExported (voipstudio_export_user_cdrs), one CSV per user per day:")
    for line in run_summary_lines(by_label["export-user-cdrs"].log_text()):
        print(line)
    for line in csv_lines(s3, BUCKET, PREFIX):
        print(line)

    print(
        f"\nDeleted at the source (voipstudio_retention, keep {RETENTION_DAYS} days; monitor "
        f"{held_monitor} under legal hold). Reasons per item are in the audit log:"
    )
    for line in audit_lines(s3, BUCKET, PREFIX, "voipstudio_retention"):
        print(line)

    print(f"\nCompliance purge of recordings and voicemail involving {number}:")
    print(f"  one run: the plan, approved by a second person ({APPROVER}) in Airflow, deleted:")
    for line in approval_lines(s3, BUCKET, PREFIX, "voipstudio_compliance_purge"):
        print(line)
    for line in note_lines(by_label["purge"].log_text()):
        print(line)
    for line in audit_lines(s3, BUCKET, PREFIX, "voipstudio_compliance_purge"):
        print(line)
    print("\nThe archived copies stay in the bucket; the audit logs say what was checked.")


def main() -> int:
    root = Path(os.environ.get("VOIPSTUDIO_DEMO_DIR") or REPO)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    stack = DemoStack(root)
    try:
        return run(stack)
    except KeyboardInterrupt:
        print("\nInterrupted: stopping what the demo started.", file=sys.stderr)
        return 130
    finally:
        stack.stop()
        print("Stopped the sandbox and SeaweedFS.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
