"""The ``voipstudio_reconcile`` DAG's steps: reconcile a range of days, re-archive what is
missing when asked, write the report and the manifests of complete days, verify the chain,
and fail on overdue gaps. Heavy imports happen inside the functions, so the DAG parses fast.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowException

from voipstudio_provider.engine.evidence.reconciliation import (
    FINDINGS,
    RECONCILED_KINDS,
    RECONCILED_RESOURCES,
    Reconciler,
    chat_findings,
    count_requests,
    csv_findings,
    csv_keys_in,
    days,
    gap_age_hours,
)
from voipstudio_provider.engine.layout import ARCHIVE_KINDS

log = logging.getLogger(__name__)

#: Gap ids the XCom summary names per kind and finding; the report names them all.
MAX_IDS_IN_XCOM = 20
#: Parallel transfers when a gap is archived again (the archive DAGs' default).
REARCHIVE_STREAMS = 4
REARCHIVE_BATCH = 200


class ReconciliationGapError(AirflowException):
    """Gaps older than the threshold remain in the archive; the report names them."""


def reconcile_params() -> dict[str, Param]:
    """The DAG's params: the range of days, re-archiving, and the overdue threshold."""
    day = ["null", "string"]
    return {
        "from_date": Param(
            None,
            type=day,
            format="date",
            title="From day",
            description="first day to reconcile (default: the run's day minus `days`)",
        ),
        "to_date": Param(
            None,
            type=day,
            format="date",
            title="To day",
            description="last day to reconcile (default: the run's day)",
        ),
        "days": Param(
            365,
            type="integer",
            minimum=1,
            title="Days",
            description="how far back the default range reaches: the retention period",
        ),
        "rearchive": Param(
            False,
            type="boolean",
            title="Re-archive gaps",
            description="archive again every missing or unverified recording, voicemail, PCAP",
        ),
        "gap_hours": Param(
            24,
            type="number",
            minimum=0,
            title="Overdue after (hours)",
            description="fail the run when a gap older than this remains",
        ),
        "resources": Param(
            list(RECONCILED_RESOURCES),
            type="array",
            items={"type": "string", "enum": list(RECONCILED_RESOURCES)},
            title="Resources",
            description="what to compare with the source",
        ),
        "verify_objects": Param(
            False,
            type="boolean",
            title="Verify every object",
            description="the manifest check also HEADs every object (one request each)",
        ),
    }


def reconcile_range(params: Mapping[str, Any], run_day: dt.date) -> tuple[dt.date, dt.date]:
    """``(first, last)`` days from the params, defaulting to ``days`` back from ``run_day``."""
    last = dt.date.fromisoformat(params["to_date"]) if params.get("to_date") else run_day
    if params.get("from_date"):
        first = dt.date.fromisoformat(params["from_date"])
    else:
        first = last - dt.timedelta(days=int(params.get("days") or 365) - 1)
    if first > last:
        raise ValueError(f"from_date {first} is after to_date {last}")
    return first, last


def _gaps_to_rearchive(gaps_by_kind: Mapping[str, list[dict]]) -> dict[str, list[int]]:
    return {
        kind: sorted({g["id"] for g in gaps if g["finding"] in ("missing", "unverified")})
        for kind, gaps in gaps_by_kind.items()
        if kind in ARCHIVE_KINDS
    }


def rearchive(
    ids_by_kind: Mapping[str, Sequence[int]],
    first: dt.date,
    last: dt.date,
    archive: Callable[[dict], Mapping[str, Any]],
) -> dict[str, dict[str, int]]:
    """Archive the given ids again the way the archive DAGs' batches do.

    :param archive: :func:`~voipstudio_provider.engine.archive.batches.archive_planned_batch` bound
        to the clients and a target.
    """
    since = dt.datetime.combine(first, dt.time(), dt.UTC)
    until = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC)
    done: dict[str, dict[str, int]] = {}
    for kind, ids in ids_by_kind.items():
        for start in range(0, len(ids), REARCHIVE_BATCH):
            chunk = list(ids[start : start + REARCHIVE_BATCH])
            batch = {
                "kind": kind,
                "first_id": chunk[0],
                "last_id": chunk[-1],
                "count": len(chunk),
                "since": since.isoformat(),
                "until": until.isoformat(),
                "above_id": None,
                "ids": chunk,
            }
            summary = archive(batch)
            total = done.setdefault(kind, Counter())
            for field in ("archived", "skipped", "failed"):
                total[field] += summary[field]
    return {kind: dict(c) for kind, c in done.items()}


def run_reconciliation(
    voip_hook,
    s3_client,
    target,
    first: dt.date,
    last: dt.date,
    *,
    report_day: dt.date,
    now: dt.datetime,
    gap_hours: float = 24,
    archive: Callable[[dict], Mapping[str, Any]] | None = None,
    resources: Sequence[str] = RECONCILED_RESOURCES,
    listed_users: Sequence[int] = (),
) -> dict[str, Any]:
    """Reconcile ``first`` .. ``last``, re-archive through ``archive`` when given, write the
    report and the manifests of complete days before ``report_day``; return the report.

    :param resources: what to compare (:data:`RECONCILED_RESOURCES` by default).
    :param listed_users: users exported every day, calls or not (their CSVs are expected).
    """
    unknown = set(resources) - set(RECONCILED_RESOURCES)
    if unknown:
        raise ValueError(f"cannot reconcile {sorted(unknown)}; known: {RECONCILED_RESOURCES}")
    from voipstudio_provider.engine.evidence.manifests import manifest_index, write_day
    from voipstudio_provider.engine.layout import report_key
    from voipstudio_provider.engine.s3objects import put_json

    requests = count_requests(s3_client)
    kinds = [k for k in RECONCILED_KINDS if k in resources]
    with_csv = "cdr_csv" in resources
    reconciler = Reconciler(voip_hook, s3_client, target, kinds)
    csv_keys = csv_keys_in(s3_client, target.bucket, target.prefix, first, last) if with_csv else {}
    index = manifest_index(s3_client, target.bucket, target.prefix)
    counts: dict[str, Counter] = {}
    gaps: dict[str, list[dict]] = {}
    gap_days: set[dt.date] = set()
    rearchived: dict[str, Counter] = {}
    written = []

    def take(name: str, result) -> None:
        counts.setdefault(name, Counter()).update(result.counts)
        gaps.setdefault(name, []).extend(result.gaps)

    # Day by day, so memory holds one day's records and manifest lines, whatever the range.
    for day in days(first, last):
        results = reconciler.check_day(day, with_csv)
        wanted = {}
        if archive is not None:
            found = {n: r.gaps for n, r in results.items() if n != "__cdrs__"}
            wanted = {k: v for k, v in _gaps_to_rearchive(found).items() if v}
        if wanted:
            for kind, done in rearchive(wanted, day, day, archive).items():
                rearchived.setdefault(kind, Counter()).update(done)
            results = reconciler.check_day(day, with_csv)
        cdrs = results.pop("__cdrs__", None) or {}
        for name, result in results.items():
            take(name, result)
        complete = not any(r.gaps for r in results.values())
        if with_csv:
            own = {k: v for k, v in csv_keys.items() if k[1] == day}
            csv_result = csv_findings({day: cdrs}, own, target.prefix, listed_users)
            take("cdr_csv", csv_result)
            complete = complete and not csv_result.gaps
        if not complete:
            gap_days.add(day)
        elif day < report_day:
            entries = [e for r in results.values() for e in r.entries]
            document = write_day(s3_client, target, day, entries, index)
            if document is not None:
                written.append(
                    f"{document['jsonl']['key'].rsplit('/', 1)[0]} v{document['version']}"
                )
    if "chats" in resources:
        take("chats", chat_findings(reconciler, first, last))

    overdue = {
        name: [g["id"] for g in found if (age := gap_age_hours(g, now)) is None or age > gap_hours]
        for name, found in gaps.items()
    }
    report = {
        "day": report_day.isoformat(),
        "from": first.isoformat(),
        "to": last.isoformat(),
        "generated_at": now.isoformat(timespec="seconds"),
        "gap_hours": gap_hours,
        "counts": {
            name: {f: c.get(f, 0) for f in sorted(set(c) | set(FINDINGS))}
            for name, c in counts.items()
        },
        "gaps": {
            name: {f: sorted(g["id"] for g in found if g["finding"] == f) for f in FINDINGS}
            for name, found in gaps.items()
        },
        "details": {name: found for name, found in gaps.items() if found},
        "overdue": {name: sorted(set(ids)) for name, ids in overdue.items() if ids},
        "rearchived": {kind: dict(done) for kind, done in rearchived.items()},
        "manifests_written": written,
        "days_with_gaps": sorted(d.isoformat() for d in gap_days),
        "s3_requests": dict(sorted(requests.items())),
    }
    key = report_key(target.prefix, report_day)
    put_json(s3_client, target.bucket, key, report, write_args=target.document_args(), indent=1)
    report["key"] = key
    return report


def short_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report's counts, with at most a few ids per finding: what the XCom carries."""
    return {
        "key": report["key"],
        "day": report["day"],
        "days_with_gaps": report["days_with_gaps"],
        "from": report["from"],
        "to": report["to"],
        "counts": report["counts"],
        "gaps": {
            name: {f: ids[:MAX_IDS_IN_XCOM] for f, ids in found.items() if ids}
            for name, found in report["gaps"].items()
            if any(found.values())
        },
        "overdue": {name: len(ids) for name, ids in report["overdue"].items()},
        "rearchived": report["rearchived"],
        "manifests_written": len(report["manifests_written"]),
        "s3_requests": report["s3_requests"],
    }


def describe(report: Mapping[str, Any]) -> str:
    """The report as lines for the task log."""
    lines = [f"reconciliation {report['from']} .. {report['to']}: report {report['key']}"]
    for name, c in sorted(report["counts"].items()):
        found = ", ".join(f"{c.get(f, 0)} {f}" for f in FINDINGS)
        lines.append(
            f"  {name}: {c.get('source', c.get('archived', 0))} checked, "
            f"{c.get('verified', 0)} verified, {found}"
        )
        for finding, ids in report["gaps"].get(name, {}).items():
            if ids:
                lines.append(
                    f"    {finding}: {ids[:MAX_IDS_IN_XCOM]}"
                    f"{' ...' if len(ids) > MAX_IDS_IN_XCOM else ''}"
                )
    if report["rearchived"]:
        lines.append(f"  re-archived: {report['rearchived']}")
    lines.append(f"  manifests written: {len(report['manifests_written'])}")
    lines.append(f"  S3 requests: {report['s3_requests']}")
    return "\n".join(lines)


def raise_if_overdue(summary: Mapping[str, Any], gap_hours: float) -> None:
    """Fail the run when gaps older than ``gap_hours`` remain."""
    if summary["overdue"]:
        what = ", ".join(f"{n} {name}" for name, n in sorted(summary["overdue"].items()))
        raise ReconciliationGapError(
            f"gaps older than {gap_hours} h remain: {what}; see {summary['key']}"
        )


def reconcile_task(params: Mapping[str, Any], data_interval_end: dt.datetime) -> dict[str, Any]:
    """The ``reconcile_archive`` task's body: reconcile, report, log; return the summary."""
    from voipstudio_provider.endpoints import as_utc
    from voipstudio_provider.engine.archive.batches import archive_planned_batch
    from voipstudio_provider.engine.archive.targets import s3_client_for
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook
    from voipstudio_provider.tasks.settings import (
        AWS_CONN_ID,
        VOIPSTUDIO_CONN_ID,
        archive_target,
        check_connections,
        fail_on_configuration_error,
        load_export_user_ids,
    )

    run_day = as_utc(data_interval_end).date()
    with fail_on_configuration_error("reconciliation's params, Variables or connections"):
        first, last = reconcile_range(params, run_day)
        target = archive_target(params)
        listed_users = load_export_user_ids()
        check_connections(VOIPSTUDIO_CONN_ID, AWS_CONN_ID)
    log.info("reconciling %s .. %s (run day %s)", first, last, run_day)

    voip_hook = VoIPstudioHook(voipstudio_conn_id=VOIPSTUDIO_CONN_ID)
    s3_client = s3_client_for(AWS_CONN_ID, REARCHIVE_STREAMS)

    def archive(batch: dict) -> Mapping[str, Any]:
        return archive_planned_batch(
            voip_hook, s3_client, batch, target, max_streams=REARCHIVE_STREAMS
        )

    report = run_reconciliation(
        voip_hook,
        s3_client,
        target,
        first,
        last,
        report_day=run_day,
        now=dt.datetime.now(dt.UTC),
        gap_hours=float(params["gap_hours"]),
        archive=archive if params.get("rearchive") else None,
        resources=params.get("resources") or RECONCILED_RESOURCES,
        listed_users=listed_users,
    )
    log.info("%s", describe(report))
    return short_summary(report)


def verify_task(params: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """The ``verify_manifests`` task's body: the auditor's check over the manifests of the
    reconciled range that should exist (days before the report's day)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from voipstudio_provider.engine.evidence.manifest_chain import verify
    from voipstudio_provider.tasks.settings import AWS_CONN_ID, resolve_bucket_and_prefix

    bucket, prefix = resolve_bucket_and_prefix(params)
    s3_client = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()
    gap_days = set(summary.get("days_with_gaps") or [])
    first = dt.date.fromisoformat(summary["from"])
    last = min(
        dt.date.fromisoformat(summary["to"]),
        dt.date.fromisoformat(summary["day"]) - dt.timedelta(days=1),
    )
    result = verify(
        s3_client, bucket, prefix, first, last, objects=bool(params.get("verify_objects"))
    )
    # A day that still has gaps has no manifest yet: that is the report's finding, not a break.
    problems = [
        p
        for p in result["problems"]
        if not (p.endswith(": no manifest") and p.split(":")[0] in gap_days)
    ]
    for problem in problems:
        log.error("%s", problem)
    log.info(
        "manifests: %d days, %d manifests, %d objects checked, %d problems",
        result["days"],
        result["manifests"],
        result["objects"],
        len(problems),
    )
    if problems:
        raise AirflowException(f"{len(problems)} manifest problems, first: {problems[0]}")
    return {**result, "problems": problems}
