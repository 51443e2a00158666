"""What the reconciliation reports and the manifests say about the archive, read back.

The ``voipstudio_reconcile`` DAG writes one report a day (``{p}/reconciliation/
date=YYYY-MM-DD/report.json``) and chains the manifests of complete days. This module only
reads them, for a person: coverage per report day with the days that have gaps first, and
whether the manifest chain of the recent days holds
(:func:`~voipstudio_provider.engine.evidence.manifest_chain.verify`, without reading the
objects themselves).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.engine.layout import manifests_prefix
from voipstudio_provider.engine.s3objects import ChangedObjectError, read_checked_json

#: What a day's coverage counts, in the order the page shows them.
COVERAGE_COUNTS = ("verified", "missing", "unverified", "orphaned", "deleted_at_source")
#: The findings that make a day a gap day.
GAP_FINDINGS = ("missing", "unverified", "orphaned")
_REPORT = re.compile(r"/reconciliation/date=(\d{4}-\d{2}-\d{2})/report\.json$")


@dataclass
class ReportCoverage:
    """One reconciliation report as the page shows it.

    :param day: the report's day (the key's ``date=``).
    :param key: the report's object key.
    :param totals: every kind's counts added up (:data:`COVERAGE_COUNTS`).
    :param kinds: the counts per kind (recordings, voicemail, PCAPs, CSVs, chats).
    :param days_with_gaps: the days of its range that are not complete.
    :param problem: why the report could not be read, or ``None``.
    """

    day: str
    key: str
    range_from: str | None = None
    range_to: str | None = None
    generated_at: str | None = None
    totals: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, dict[str, int]] = field(default_factory=dict)
    days_with_gaps: list[str] = field(default_factory=list)
    overdue: dict[str, int] = field(default_factory=dict)
    problem: str | None = None

    @property
    def has_gaps(self) -> bool:
        return bool(
            self.problem
            or self.days_with_gaps
            or any(self.totals.get(finding) for finding in GAP_FINDINGS)
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "has_gaps": self.has_gaps}


def report_keys(s3_client, bucket: str, prefix: str) -> dict[str, str]:
    """Every report in the bucket: ``{day: key}``, newest day first."""
    found: dict[str, str] = {}
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/reconciliation/"):
        for item in page.get("Contents", []):
            match = _REPORT.search(item["Key"])
            if match:
                found[match.group(1)] = item["Key"]
    return dict(sorted(found.items(), reverse=True))


def _coverage_of(day: str, key: str, report: Mapping[str, Any]) -> ReportCoverage:
    kinds = {
        name: {count: int(counts.get(count, 0)) for count in COVERAGE_COUNTS}
        for name, counts in sorted((report.get("counts") or {}).items())
    }
    totals = {count: sum(k[count] for k in kinds.values()) for count in COVERAGE_COUNTS}
    return ReportCoverage(
        day=day,
        key=key,
        range_from=report.get("from"),
        range_to=report.get("to"),
        generated_at=report.get("generated_at"),
        totals=totals,
        kinds=kinds,
        days_with_gaps=sorted(report.get("days_with_gaps") or []),
        overdue={name: len(ids) for name, ids in (report.get("overdue") or {}).items()},
    )


def read_coverage(s3_client, bucket: str, prefix: str, *, days: int = 31) -> list[ReportCoverage]:
    """The newest ``days`` reports, the ones with gaps (or unreadable) first, then by day,
    newest first.

    A report that does not match the digest it was written with, or cannot be read, is
    listed with its ``problem`` rather than left out: a page that hides a broken report
    would say the archive is complete.
    """
    rows = []
    for day, key in list(report_keys(s3_client, bucket, prefix).items())[:days]:
        try:
            report, _ = read_checked_json(s3_client, bucket, key)
        except (ChangedObjectError, ClientError, ValueError) as error:
            rows.append(ReportCoverage(day=day, key=key, problem=_reason(error)))
            continue
        rows.append(_coverage_of(day, key, report))
    rows.sort(key=lambda row: row.day, reverse=True)
    rows.sort(key=lambda row: not row.has_gaps)
    return rows


def _reason(error: Exception) -> str:
    if isinstance(error, ClientError):
        return f"cannot be read ({error.response.get('Error', {}).get('Code', 'error')})"
    if isinstance(error, ChangedObjectError):
        return "does not match the SHA-256 it was written with"
    return "is not valid JSON"


def gap_days(rows: Iterable[ReportCoverage]) -> set[str]:
    """Every day some report names as incomplete."""
    return {day for row in rows for day in row.days_with_gaps}


def manifest_chain(
    s3_client, bucket: str, prefix: str, *, days: int = 31, gap_days: Iterable[str] = ()
) -> dict[str, Any]:
    """Whether the manifest chain of the newest ``days`` manifest days holds.

    Only manifests are read (one GET per version and per object list), never the archived
    objects. A day inside the checked range without a manifest is a problem unless a report
    names it as a gap day: such a day gets its manifest once it is complete.

    :return: ``{"state": "holds" | "broken" | "none", "first": day, "last": day,
        "days": n, "manifests": n, "problems": [...]}``.
    """
    from voipstudio_provider.engine.evidence.manifest_chain import verify

    manifest_days = _manifest_days(s3_client, bucket, prefix)
    if not manifest_days:
        return {"state": "none", "first": None, "last": None, "days": 0, "manifests": 0,
                "problems": []}  # fmt: skip
    last = manifest_days[-1]
    first = max(manifest_days[0], last - dt.timedelta(days=days - 1))
    result = verify(s3_client, bucket, prefix, first, last)
    allowed = {f"{day}: no manifest" for day in gap_days}
    problems = [problem for problem in result["problems"] if problem not in allowed]
    return {
        "state": "broken" if problems else "holds",
        "first": first.isoformat(),
        "last": last.isoformat(),
        "days": result["days"],
        "manifests": result["manifests"],
        "problems": problems,
    }


def _manifest_days(s3_client, bucket: str, prefix: str) -> list[dt.date]:
    found = set()
    paginator = s3_client.get_paginator("list_objects_v2")
    below = manifests_prefix(prefix)
    for page in paginator.paginate(Bucket=bucket, Prefix=below, Delimiter="/"):
        for folder in page.get("CommonPrefixes", []):
            name = folder["Prefix"][len(below) :].strip("/")
            if name.startswith("date="):
                try:
                    found.add(dt.date.fromisoformat(name[len("date=") :]))
                except ValueError:
                    continue
    return sorted(found)
