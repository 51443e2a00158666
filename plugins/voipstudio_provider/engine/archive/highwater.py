"""The durable high-water mark of each archive kind (README, "The high-water mark").

A kind's mark is the highest record id up to which every record the archive DAG listed was
archived and verified. It lives in the bucket beside the archive,
``{p}/highwater/{kind}.json``, so a new Airflow (or a restored one) continues where the
archive stands. Each run lists ``id > mark`` besides its time window: ids grow as records
reach the API, so a record that arrives days after its own date is still above the mark.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from voipstudio_provider.engine.layout import highwater_key
from voipstudio_provider.engine.s3objects import is_not_found

log = logging.getLogger(__name__)


def read_mark(s3_client, bucket: str, prefix: str, kind_name: str) -> int | None:
    """The kind's mark, or ``None`` when it has none yet (the first run starts it).

    :raises ValueError: the mark object exists but does not hold a mark; a run must not
        guess where the archive stands.
    """
    try:
        body = s3_client.get_object(Bucket=bucket, Key=highwater_key(prefix, kind_name))["Body"]
    except ClientError as error:
        if is_not_found(error):
            return None
        raise
    with body:
        document = json.loads(body.read())
    mark = document.get("id") if isinstance(document, dict) else None
    if isinstance(mark, bool) or not isinstance(mark, int):
        raise ValueError(f"{highwater_key(prefix, kind_name)} holds no integer id: {document!r}")
    return mark


def write_mark(
    s3_client, bucket: str, prefix: str, kind_name: str, mark: int, **about: Any
) -> None:
    """Store the kind's mark; never moves it down (a concurrent run may be ahead).

    :param about: what to record beside the id (the DAG run, the window).
    """
    from voipstudio_provider.engine.archive.writer import ArchiveTarget, put_json

    current = read_mark(s3_client, bucket, prefix, kind_name)
    if current is not None and current >= mark:
        return
    document = {
        "kind": kind_name,
        "id": int(mark),
        "previous_id": current,
        "updated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **about,
    }
    put_json(
        s3_client,
        ArchiveTarget(bucket=bucket, prefix=prefix),
        highwater_key(prefix, kind_name),
        document,
    )
    log.info("high-water mark of %s: %s -> %d", kind_name, current, mark)


def advance(
    mark: int | None,
    batches: Sequence[Mapping[str, Any]],
    summaries: Mapping[tuple[int, int], Mapping[str, Any]],
) -> int | None:
    """The new mark of one kind after a run: as far as its batches succeeded in id order.

    A failed record above the old mark stops the mark just below it; a batch that did not
    finish stops it below the batch. Failures at or below the old mark do not hold it back
    (the reconciliation reports them).

    :param mark: the mark the run was planned with (``None``: the first run).
    :param batches: the kind's planned batches (``first_id``, ``last_id``), any order.
    :param summaries: the finished batches' summaries by ``(first_id, last_id)``.
    """
    new = mark
    for batch in sorted(batches, key=lambda b: int(b["first_id"])):
        first, last = int(batch["first_id"]), int(batch["last_id"])
        summary = summaries.get((first, last))
        if summary is not None and not summary["failed"]:
            new = last if new is None else max(new, last)
            continue
        if summary is None:
            stop = first - 1
        else:  # ids are archived in ascending order: the first failed id is the lowest
            stop = (
                min(int(i) for i in summary["failed_ids"]) - 1
                if summary["failed_ids"]
                else first - 1
            )
        if mark is not None and last <= mark:
            continue
        if new is None or stop > new:
            new = stop
        break
    return new
