"""What the deleting runs did, read back from their audit objects.

Retention and the purge write one audit object per run (``{p}/audit/{dag_id}/
{run_id}.jsonl``, :mod:`~voipstudio_provider.engine.evidence.audit`). This module lists the newest
ones and counts their lines for a person: what was deleted, what was kept and why.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.engine.evidence.audit import (
    DELETED,
    DELETED_UNCONFIRMED,
    FAILED,
    MASKED,
    REASONS,
    SKIPPED,
    WOULD_DELETE,
    WOULD_MASK,
)
from voipstudio_provider.engine.s3objects import is_not_found

#: Lines counted per audit object; a larger object is counted this far and says so, so
#: that a page stays quick whatever a run deleted.
MAX_AUDIT_LINES = 200_000
#: The actions that mean "kept at the source", with the reason on the line.
KEPT_ACTIONS = (SKIPPED, FAILED)
_AUDIT_SUFFIX = ".jsonl"


@dataclass
class DeletionRun:
    """One deleting run as its audit object tells it.

    :param dag_id: ``voipstudio_retention`` or ``voipstudio_compliance_purge``.
    :param run_id: the DAG run's id (the audit object's name).
    :param audit_key: the audit object's key.
    :param written_at: when the audit object was last written (ISO 8601, UTC).
    :param deleted: items deleted per resource (confirmed or not).
    :param planned: items a dry run would delete (or mask) per resource.
    :param masked: CDRs masked per resource.
    :param kept: ``{reason: n}`` for items kept (skipped or failed).
    :param lines: lines counted; ``complete`` is false when the cap stopped the count.
    """

    dag_id: str
    run_id: str
    audit_key: str
    written_at: str | None = None
    deleted: dict[str, int] = field(default_factory=dict)
    planned: dict[str, int] = field(default_factory=dict)
    masked: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    complete: bool = True
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        kept = [
            {"reason": reason, "count": n, "meaning": REASONS.get(reason, reason)}
            for reason, n in sorted(self.kept.items(), key=lambda item: (-item[1], item[0]))
        ]
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "audit_key": self.audit_key,
            "written_at": self.written_at,
            "deleted": self.deleted,
            "deleted_total": sum(self.deleted.values()),
            "planned": self.planned,
            "masked": self.masked,
            "kept": kept,
            "kept_total": sum(self.kept.values()),
            "lines": self.lines,
            "complete": self.complete,
            "problem": self.problem,
        }


def latest_audit_objects(
    s3_client, bucket: str, prefix: str, dag_id: str, *, limit: int = 5
) -> list[tuple[str, str, str]]:
    """The newest ``limit`` audit objects of ``dag_id``: ``(run_id, key, written_at)``,
    newest first. Parts of runs not yet joined and purge plans are not audit objects."""
    below = f"{prefix}/audit/{dag_id}/"
    found = []
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=below, Delimiter="/"):
        for item in page.get("Contents", []):
            name = item["Key"][len(below) :]
            if name.endswith(_AUDIT_SUFFIX) and not name.endswith(".plan.json"):
                found.append((item["LastModified"], name[: -len(_AUDIT_SUFFIX)], item["Key"]))
    found.sort(reverse=True)
    return [(run_id, key, modified.isoformat()) for modified, run_id, key in found[:limit]]


def _lines(s3_client, bucket: str, key: str) -> Iterator[bytes]:
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"]
    with body:
        for line in body.iter_lines():
            if line.strip():
                yield line


def read_deletion_run(
    s3_client, bucket: str, key: str, dag_id: str, run_id: str, *, written_at: str | None = None
) -> DeletionRun:
    """Count one audit object's lines (at most :data:`MAX_AUDIT_LINES`)."""
    run = DeletionRun(dag_id=dag_id, run_id=run_id, audit_key=key, written_at=written_at)
    deleted: Counter[str] = Counter()
    planned: Counter[str] = Counter()
    masked: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    try:
        for line in _lines(s3_client, bucket, key):
            if run.lines >= MAX_AUDIT_LINES:
                run.complete = False
                break
            run.lines += 1
            item = json.loads(line)
            action, resource = item.get("action"), str(item.get("resource"))
            if action in (DELETED, DELETED_UNCONFIRMED):
                deleted[resource] += 1
            elif action in (WOULD_DELETE, WOULD_MASK):
                planned[resource] += 1
            elif action == MASKED:
                masked[resource] += 1
            elif action in KEPT_ACTIONS:
                kept[str(item.get("reason"))] += 1
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        run.problem = "the audit object is gone" if is_not_found(error) else f"unreadable ({code})"
    except ValueError:
        run.problem = f"line {run.lines} is not JSON"
    run.deleted, run.planned, run.masked = dict(deleted), dict(planned), dict(masked)
    run.kept = dict(kept)
    return run


def latest_deletion_runs(
    s3_client, bucket: str, prefix: str, dag_id: str, *, limit: int = 5
) -> list[DeletionRun]:
    """The newest ``limit`` runs of ``dag_id`` that left an audit object, newest first."""
    return [
        read_deletion_run(s3_client, bucket, key, dag_id, run_id, written_at=written_at)
        for run_id, key, written_at in latest_audit_objects(
            s3_client, bucket, prefix, dag_id, limit=limit
        )
    ]
