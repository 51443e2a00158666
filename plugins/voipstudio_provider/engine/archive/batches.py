"""Archive runs in batches: the window, the batches of ids, a batch archived, the sums.

Planning lists a window (and what lies above each kind's high-water mark) and cuts the
ids into small batch descriptions (id ranges, never records); :func:`archive_planned_batch`
lists one batch again and archives it; :func:`combine_summaries` and :func:`id_ranges`
add the batches of a run up. No Airflow context here: the archive DAGs' tasks
(:mod:`voipstudio_provider.tasks.archive`) and the reconciliation call these.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from voipstudio_provider.endpoints import as_utc

log = logging.getLogger("voipstudio_provider.tasks.archive")

#: Batches a run may map over; far below Airflow's ``max_map_length`` (1024). A window
#: with more records gets larger batches instead of more of them.
MAX_BATCHES = 500
#: Failed ids a batch or run summary names in XCom; the log names them all.
MAX_FAILED_IDS_IN_XCOM = 100


def archive_window(
    data_interval_start: dt.datetime, data_interval_end: dt.datetime, lookback_hours: float
) -> tuple[dt.datetime, dt.datetime]:
    """The records a run looks at: its data interval, started ``lookback_hours`` earlier.

    The look-back catches records that appear in the API after their own date's run; what
    an earlier run already archived is verified in the bucket and skipped.

    :param data_interval_start: the run's data interval start (inclusive).
    :param data_interval_end: the run's data interval end (exclusive).
    :param lookback_hours: how far before the interval to look, in hours (0 or more).
    :return: ``(since, until)`` as aware UTC datetimes.
    """
    if lookback_hours < 0:
        raise ValueError("lookback_hours must not be negative")
    if data_interval_start is None or data_interval_end is None:
        raise ValueError("the run has no data interval (see settings.run_interval)")
    since = as_utc(data_interval_start) - dt.timedelta(hours=lookback_hours)
    until = as_utc(data_interval_end)
    if until <= since:
        raise ValueError(f"empty archive window {since.isoformat()} .. {until.isoformat()}")
    return since, until


def kind_named(name: str):
    """The :class:`~voipstudio_provider.engine.layout.ArchiveKind` called ``name``."""
    from voipstudio_provider.engine.layout import ARCHIVE_KINDS

    try:
        return ARCHIVE_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown archive kind {name!r}; known: {sorted(ARCHIVE_KINDS)}") from None


def _chunks(ids: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def plan_batches(
    voip_hook,
    kinds: Sequence[str],
    since: dt.datetime,
    until: dt.datetime,
    batch_size: int,
    max_batches: int = MAX_BATCHES,
    marks: Mapping[str, int | None] | None = None,
) -> list[dict[str, Any]]:
    """List the window, and every id above each kind's high-water mark, and cut the ids
    into batches.

    Kinds of the same resource (a CDR's PCAP and its trace) share one listing. Only ids are
    kept in memory; the batches carry id ranges, so XCom stays small.

    :param voip_hook: a :class:`~voipstudio_provider.hooks.voipstudio.VoIPstudioHook`.
    :param kinds: archive kind names (see :data:`~voipstudio_provider.engine.layout.ARCHIVE_KINDS`).
    :param since: window start (inclusive) on each resource's date field.
    :param until: window end (exclusive).
    :param batch_size: records per batch; raised when the window would need more than
        ``max_batches`` batches.
    :param max_batches: the most batches a run maps over.
    :param marks: each kind's high-water mark (see
        :mod:`~voipstudio_provider.engine.archive.highwater`); a kind without one
        (``None``, or absent) is planned from its window only.
    :return: ``[{"kind", "first_id", "last_id", "count", "since", "until", "above_id"}, ...]``,
        ``above_id`` being the kind's mark.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    by_resource: dict[str, list[str]] = {}
    for name in kinds:
        by_resource.setdefault(kind_named(name).resource, []).append(name)

    from voipstudio_provider.endpoints import Filter

    marks = marks or {}
    ids_by_kind: dict[str, list[int]] = {}
    for resource, names in by_resource.items():
        ids = {int(r["id"]) for r in voip_hook.iter_records(resource, since=since, until=until)}
        log.info("%d %s in %s .. %s", len(ids), resource, since.isoformat(), until.isoformat())
        kind_marks = [marks.get(name) for name in names]
        above: set[int] = set()
        if any(m is not None for m in kind_marks):
            lowest = min(m for m in kind_marks if m is not None)
            listed = voip_hook.iter_records(resource, filters=[Filter("id", "gt", lowest)])
            above = {int(r["id"]) for r in listed}
            log.info("%d %s above id %d", len(above), resource, lowest)
        for name, mark in zip(names, kind_marks, strict=True):
            extra = {i for i in above if mark is not None and i > mark}
            ids_by_kind[name] = sorted(ids | extra)

    total_batches = sum(math.ceil(len(ids) / batch_size) for ids in ids_by_kind.values())
    if total_batches > max_batches:
        rows = sum(len(ids) for ids in ids_by_kind.values())
        batch_size = math.ceil(rows / max(1, max_batches - len(kinds)))
        log.info(
            "window too large for %d batches: batch size raised to %d", max_batches, batch_size
        )

    batches = []
    for name, ids in ids_by_kind.items():
        for chunk in _chunks(ids, batch_size):
            batches.append(
                {
                    "kind": name,
                    "first_id": chunk[0],
                    "last_id": chunk[-1],
                    "count": len(chunk),
                    "since": since.isoformat(),
                    "until": until.isoformat(),
                    "above_id": marks.get(name),
                }
            )
    return batches


def plan_run(
    voip_hook,
    s3_client,
    kinds: Sequence[str],
    since: dt.datetime,
    until: dt.datetime,
    batch_size: int,
    *,
    bucket: str,
    prefix: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read each kind's high-water mark and plan the run's batches (:func:`plan_batches`).

    :return: the batches, and the plan the summary reports (window and marks), which an
        empty run reports too.
    """
    from voipstudio_provider.engine.archive.highwater import read_mark

    marks = {name: read_mark(s3_client, bucket, prefix, name) for name in kinds}
    batches = plan_batches(voip_hook, kinds, since, until, batch_size, marks=marks)
    plan = {"since": since.isoformat(), "until": until.isoformat(), "marks": marks}
    return batches, plan


def batch_label(batch: Mapping[str, Any]) -> str:
    """A batch's name in the UI's mapped task list, e.g. ``monitors 1201–1400``."""
    return f"{batch['kind']} {batch['first_id']}–{batch['last_id']}"


def batch_records(voip_hook, batch: Mapping[str, Any]) -> list[dict]:
    """The records of a batch, listed again: its id range within its window, and the ids of
    the range above the batch's high-water mark whatever their date.

    Records deleted since planning are simply absent; nothing outside the range is added.
    """
    from voipstudio_provider.endpoints import RESOURCES, Filter, parse_api_datetime

    kind = kind_named(batch["kind"])
    first, last = int(batch["first_id"]), int(batch["last_id"])
    filters = [Filter("id", "gte", first), Filter("id", "lte", last)]
    since = dt.datetime.fromisoformat(batch["since"])
    until = dt.datetime.fromisoformat(batch["until"])
    above = batch.get("above_id")
    wanted = set(batch["ids"]) if batch.get("ids") is not None else None
    if above is None or last <= int(above):
        records = voip_hook.iter_records(kind.resource, since=since, until=until, filters=filters)
    else:
        date_field = RESOURCES[kind.resource].date_field
        records = (
            r
            for r in voip_hook.iter_records(kind.resource, filters=filters)
            if int(r["id"]) > int(above) or since <= parse_api_datetime(r[date_field]) < until
        )
    return [r for r in records if wanted is None or int(r["id"]) in wanted]


def combine_summaries(
    batches: Sequence[Mapping[str, Any]] | None,
    batch_summaries: Iterable[Mapping[str, Any] | None],
    *,
    bucket: str,
    prefix: str,
) -> dict[str, Any]:
    """Add up the batch summaries of a run into one small summary.

    A planned batch without a summary (its task failed before archiving, e.g. the API was
    unreachable) counts as an incomplete batch.

    :param batches: what the planning task returned (``None`` if it failed).
    :param batch_summaries: what each batch task pushed.
    :param bucket: the run's bucket, for the summary.
    :param prefix: the run's prefix, for the summary.
    """
    summaries = [s for s in batch_summaries if s]
    done = {(s["kind"], s["first_id"], s["last_id"]) for s in summaries}
    missing = [
        batch_label(b)
        for b in (batches or [])
        if (b["kind"], int(b["first_id"]), int(b["last_id"])) not in done
    ]
    kinds: dict[str, dict[str, Any]] = {}
    for s in summaries:
        total = kinds.setdefault(
            s["kind"],
            {"records": 0, "archived": 0, "skipped": 0, "failed": 0, "bytes": 0, "failed_ids": []},
        )
        for field in ("records", "archived", "skipped", "failed", "bytes"):
            total[field] += s[field]
        room = MAX_FAILED_IDS_IN_XCOM - len(total["failed_ids"])
        total["failed_ids"].extend(s["failed_ids"][: max(0, room)])
    first = batches[0] if batches else {}
    return {
        "bucket": bucket,
        "prefix": prefix,
        "since": first.get("since"),
        "until": first.get("until"),
        "planned": batches is not None,
        "batches": len(batches or []),
        "incomplete_batches": missing[:MAX_FAILED_IDS_IN_XCOM],
        **{f: sum(k[f] for k in kinds.values()) for f in ("records", "archived", "skipped")},
        "failed": sum(k["failed"] for k in kinds.values()),
        "bytes": sum(k["bytes"] for k in kinds.values()),
        "kinds": kinds,
    }


def describe_summary(summary: Mapping[str, Any]) -> str:
    """The run's summary as lines for the task log."""
    lines = [
        f"archive of s3://{summary['bucket']}/{summary['prefix']}/ "
        f"window {summary['since']} .. {summary['until']} in {summary['batches']} batches: "
        f"{summary['records']} records, {summary['archived']} archived "
        f"({summary['bytes']} bytes), {summary['skipped']} skipped (already verified), "
        f"{summary['failed']} failed"
    ]
    for name, k in sorted(summary["kinds"].items()):
        lines.append(
            f"  {name}: {k['records']} records, {k['archived']} archived ({k['bytes']} bytes), "
            f"{k['skipped']} skipped, {k['failed']} failed"
            + (f": ids {', '.join(map(str, k['failed_ids']))}" if k["failed_ids"] else "")
        )
    if summary["incomplete_batches"]:
        lines.append(f"  batches that did not finish: {', '.join(summary['incomplete_batches'])}")
    if not summary["planned"]:
        lines.append("  the window could not be listed")
    return "\n".join(lines)


def id_ranges(
    plan: Mapping[str, Any] | None,
    batches: Sequence[Mapping[str, Any]] | None,
    summaries: Iterable[Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Per kind: the id range the run covered, the mark it was planned with, the new mark."""
    from voipstudio_provider.engine.archive.highwater import advance

    marks = dict((plan or {}).get("marks") or {})
    done: dict[str, dict[tuple[int, int], Mapping[str, Any]]] = {}
    for s in summaries:
        done.setdefault(s["kind"], {})[(int(s["first_id"]), int(s["last_id"]))] = s
    ranges: dict[str, dict[str, Any]] = {}
    for name in sorted(set(marks) | {b["kind"] for b in batches or []}):
        own = [b for b in batches or [] if b["kind"] == name]
        mark = marks.get(name)
        ranges[name] = {
            "first_id": min((int(b["first_id"]) for b in own), default=None),
            "last_id": max((int(b["last_id"]) for b in own), default=None),
            "above_id": mark,
            "mark": advance(mark, own, done.get(name, {})) if batches is not None else mark,
        }
    return ranges


def _index_subjects(s3_client, target, kind, records, outcomes, ledgers, regions) -> None:
    """Index the numbers of every record the batch stored or found stored; a record found
    stored is indexed again (cheap: the record is at hand), so a retried batch loses none."""
    from voipstudio_provider.engine.subjects.subject_index import index_batch

    stored = {o.record_id for o in outcomes if o.status in ("archived", "skipped")}
    name = ledgers[0].rsplit("/", 1)[-1][: -len(".jsonl")] if ledgers else None
    if name is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{kind.name}-{stamp}"
    chosen = [r for r in records if int(r["id"]) in stored]
    index_batch(s3_client, target, kind, chosen, name, regions)


def archive_planned_batch(
    voip_hook,
    s3_client,
    batch: Mapping[str, Any],
    target,
    *,
    max_streams: int = 4,
    regions: Sequence[str] = (),
) -> dict[str, Any]:
    """Archive every record of one planned batch and write its ledger and its subject
    index (:mod:`~voipstudio_provider.engine.subjects.subject_index`); a failed record does not stop
    the others.

    :param batch: one item of :func:`plan_batches` (with ``ids``, only those of the range).
    :param target: where to write (an
        :class:`~voipstudio_provider.engine.archive.targets.ArchiveTarget`).
    :param max_streams: parallel downloads and uploads inside the batch.
    :param regions: regions national numbers are read in for the subject index (the
        Variable ``voipstudio_default_region``).
    :return: the batch summary: ``kind``, ``first_id``, ``last_id``, ``records``,
        ``archived``, ``skipped``, ``failed``, ``bytes``, ``failed_ids`` (bounded),
        ``errors`` (the first few, for people) and ``ledgers`` (ledger objects written).
    """
    from voipstudio_provider.engine.archive.ledger import write_ledger
    from voipstudio_provider.engine.archive.writer import archive_and_summarize

    kind = kind_named(batch["kind"])
    records = batch_records(voip_hook, batch)
    done = archive_and_summarize(
        voip_hook, s3_client, kind, records, target, max_streams=max_streams
    )
    counts, failures = done.counts, done.failures
    # Written after the uploads: a ledger line never names an object that is not stored.
    ledgers = write_ledger(s3_client, target, batch, done.outcomes)
    _index_subjects(s3_client, target, kind, records, done.outcomes, ledgers, regions)
    return {
        "kind": kind.name,
        "first_id": int(batch["first_id"]),
        "last_id": int(batch["last_id"]),
        "records": len(done.outcomes),
        "archived": counts["archived"],
        "skipped": counts["skipped"],
        "failed": counts["failed"],
        "bytes": counts["bytes"],
        "failed_ids": counts["failed_ids"][:MAX_FAILED_IDS_IN_XCOM],
        "errors": {str(o.record_id): o.error for o in failures[:5]},
        "ledgers": len(ledgers),
    }
