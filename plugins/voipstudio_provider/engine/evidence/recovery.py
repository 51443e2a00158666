"""What a deleting run settles before it deletes: whatever earlier runs left behind.

A run whose process dies outright (SIGKILL, an OOM kill, a lost node) never runs its
teardown: its write-ahead intents stay pending below ``{run_id}.intents/`` and its audit
parts are never joined. :func:`settle_left_behind` finds every such run of *either*
deleting DAG under ``{p}/audit/{dag_id}/``, asks the source about each pending intent's ids
(gone: a ``deleted`` line; still there: a ``failed`` line, and the intent is released), and
joins the run's parts into its audit object, so that the finished object of the run that
sent the deletes holds every line. Each line written so carries ``recovered_by``, the
``dag_id/run_id`` of the run that settled it.

A run that may still be at work is left alone, for its own teardown or a later run: one
of its attempts holds a lease (:mod:`~voipstudio_provider.engine.evidence.leases`) whose process
still runs on this host or that was refreshed within ``grace``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from voipstudio_provider.engine.evidence.audit import DELETING_DAG_IDS, merge_audit_parts
from voipstudio_provider.engine.evidence.intents import evidence_args, reconcile_run
from voipstudio_provider.engine.evidence.leases import lease_is_dead, leases_prefix, read_lease
from voipstudio_provider.engine.layout import audit_key

log = logging.getLogger(__name__)

#: A lease not refreshed for this long (ten heartbeats), or a run without leases that wrote
#: nothing for this long, is taken for dead.
SETTLE_GRACE = dt.timedelta(minutes=10)
#: The suffixes of what a run leaves below its audit key while it deletes.
_LEFT_BEHIND = (".intents/", ".parts/", ".leases/")


@dataclass
class Settled:
    """What :func:`settle_left_behind` did."""

    #: ``dag_id/run_id`` of every run whose audit object was completed.
    runs: list[str] = field(default_factory=list)
    #: Pending intents asked of the source and resolved.
    intents: int = 0
    #: ``dag_id/run_id`` of runs left alone because they wrote recently.
    recent: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "intents": self.intents, "recent": self.recent}


@dataclass
class LeftBehind:
    """What one run left below its audit key: when it last wrote, and its leases."""

    last_written: dt.datetime
    leases: list[str] = field(default_factory=list)


def runs_left_behind(s3_client, target, dag_id: str) -> dict[str, LeftBehind]:
    """The runs of ``dag_id`` with intents, parts or leases, by run id."""
    below = audit_key(target.prefix, dag_id, "").removesuffix(".jsonl")  # {p}/audit/{dag}/
    found: dict[str, LeftBehind] = {}
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=target.bucket, Prefix=below):
        for obj in page.get("Contents", []):
            rest = obj["Key"][len(below) :]
            for suffix in _LEFT_BEHIND:
                run_id, sep, _ = rest.partition(suffix)
                if sep and "/" not in run_id:
                    when = obj["LastModified"]
                    run = found.setdefault(run_id, LeftBehind(when))
                    run.last_written = max(run.last_written, when)
                    if suffix == ".leases/":
                        run.leases.append(obj["Key"])
                    break
    return found


def is_alive(s3_client, target, run: LeftBehind, now: dt.datetime, grace: dt.timedelta) -> bool:
    """Whether a run that left intents or parts may still be at work.

    With leases: alive while one of its attempts' leases is (its process still runs on
    this host, or it was refreshed within ``grace``). Without: alive while it wrote within
    ``grace``.
    """
    if not run.leases:
        return now - run.last_written < grace
    for key in run.leases:
        lease = read_lease(s3_client, target.bucket, key)
        if lease is None:
            if now - run.last_written < grace:
                return True
        elif not lease_is_dead(lease, now, grace):
            return True
    return False


def settle_left_behind(
    hook,
    s3_client,
    target,
    *,
    dag_id: str,
    run_id: str,
    grace: dt.timedelta = SETTLE_GRACE,
    wait: float = 0.0,
    dag_ids: tuple[str, ...] = DELETING_DAG_IDS,
    now: dt.datetime | None = None,
) -> Settled:
    """Settle every other run of ``dag_ids`` that left intents or parts; return what.

    :param dag_id: the settling run's DAG (its own run is never settled here).
    :param run_id: the settling run's id, written as ``recovered_by`` on each line.
    :param grace: a run that wrote an intent or a part more recently is left alone.
    :param wait: seconds to keep asking about deletes that may still land, see
        :func:`~voipstudio_provider.engine.evidence.intents.reconcile_intents`.
    :raises Exception: whatever S3 or the API raise: a run that cannot settle must not delete.
    """
    moment = now or dt.datetime.now(dt.UTC)
    settled = Settled()
    recovered_by = f"{dag_id}/{run_id}"
    for earlier_dag in dag_ids:
        for earlier_run, left in sorted(runs_left_behind(s3_client, target, earlier_dag).items()):
            if (earlier_dag, earlier_run) == (dag_id, run_id):
                continue
            name = f"{earlier_dag}/{earlier_run}"
            if is_alive(s3_client, target, left, moment, grace):
                log.warning("%s last wrote at %s and may be alive: left alone",
                            name, left.last_written.isoformat())  # fmt: skip
                settled.recent.append(name)
                continue
            settled.intents += reconcile_run(
                hook, s3_client, target, earlier_dag, earlier_run, wait=wait,
                line_fields={"recovered_by": recovered_by}, part_name="recovered",
            )  # fmt: skip
            summary = merge_audit_parts(
                s3_client, target.bucket, target.prefix, earlier_dag, earlier_run,
                write_args=evidence_args(target, lock=True),
            )  # fmt: skip
            for lease in left.leases:
                s3_client.delete_object(Bucket=target.bucket, Key=lease)
            log.warning("settled %s, left behind: its audit s3://%s/%s now has %d lines",
                        name, target.bucket, summary["key"], summary["lines"])  # fmt: skip
            settled.runs.append(name)
    return settled


def drop_leases(s3_client, target, dag_id: str, run_id: str) -> None:
    """Remove the leases a run's killed attempts left (when the run's own audit is written)."""
    below = leases_prefix(target.prefix, dag_id, run_id)
    for page in s3_client.get_paginator("list_objects_v2").paginate(
        Bucket=target.bucket, Prefix=below
    ):
        for obj in page.get("Contents", []):
            s3_client.delete_object(Bucket=target.bucket, Key=obj["Key"])
