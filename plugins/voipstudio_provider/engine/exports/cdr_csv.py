"""A user's CDRs of a UTC day as a CSV file in S3, built without Airflow.

One file per user per day, ``{p}/cdr-csv/user_id={user}/date=YYYY-MM-DD/cdrs.csv``, built
from the user's CDR records: ``GET /cdrs`` filtered by ``user_id`` and the day's
``calldate``, keyset-paged. The real service's ``/users/{id}/cdrs.csv`` queues an export job
(202) instead of sending a file, so the file is made here, where every row can be checked.

A user's day goes through two spooled temporary files (memory stays flat however many calls):

1. the records as JSON lines, as the API sent them, while the field names beyond the
   reference's are collected (they may first appear on the last record) and the order
   checked (:class:`CdrSpool`);
2. the CSV: the header (:func:`csv_columns`), then one row per record in ``calldate``,
   ``id`` order (:func:`write_cdr_csv`). Keyset paging gives id order; when ids do not rise
   with ``calldate`` the records are put in order by an external merge sort of sorted runs
   kept on disk.

The row count must equal the API's ``total`` for the user and day, and every record must be
the user's and of the day, or nothing is uploaded (:class:`ExportMismatchError`).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import heapq
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import IO, Any

from voipstudio_provider.endpoints import RESOURCES, Filter
from voipstudio_provider.engine.layout import cdr_csv_key

log = logging.getLogger(__name__)

#: Bytes a spooled temporary file keeps in memory before it moves to disk.
SPOOL_SIZE = 8 * 1024 * 1024
#: Records per sorted run when the records must be put in ``calldate`` order on disk.
SORT_RUN_RECORDS = 10_000
#: The CSV's first columns: every CDR field of the History reference, in its order.
REFERENCE_COLUMNS: tuple[str, ...] = RESOURCES["cdrs"].fields


class ExportMismatchError(ValueError):
    """The records the API gave for a user's day are not that user's day: nothing is written."""


def csv_columns(further_fields: Iterable[str]) -> list[str]:
    """The header of a CDR CSV: the reference's CDR fields in the reference's order, then
    every further field the API sent, sorted by name (stable whatever record brought it)."""
    return [*REFERENCE_COLUMNS, *sorted(set(further_fields) - set(REFERENCE_COLUMNS))]


def csv_cell(value: Any) -> str:
    """A record's value as a CSV cell: absent or null empty, text as it is, anything else
    (numbers, booleans, lists, objects) as compact JSON. So the file holds what the API sent,
    whichever encoding of enumerations the account uses: ``"I"`` is written ``I``, ``1``
    is written ``1``, even both in one file."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _order_key(record: Mapping[str, Any]) -> tuple[str, int]:
    return (str(record.get("calldate") or ""), int(record["id"]))


class CdrSpool:
    """The records of one user's day, spooled as JSON lines while they arrive.

    :param spool: a binary file to spool to (a :class:`~tempfile.SpooledTemporaryFile`).
    :param user_id: the user whose day it is.
    :param day: the UTC day.
    """

    def __init__(self, spool: IO[bytes], user_id: int, day: dt.date) -> None:
        self._spool = spool
        self.user_id = int(user_id)
        self.day = day.isoformat()
        self.count = 0
        self.further_fields: set[str] = set()
        #: whether the records arrived in ``calldate``, ``id`` order (ids rising with dates)
        self.in_order = True
        self._last_key: tuple[str, int] | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        user, calldate = record.get("user_id"), str(record.get("calldate") or "")
        if str(user) != str(self.user_id) or calldate[:10] != self.day:
            raise ExportMismatchError(
                f"the API returned CDR {record.get('id')} (user {user}, calldate {calldate!r}) "
                f"for user {self.user_id}'s {self.day}; its filter was not honoured"
            )
        key = _order_key(record)
        if self._last_key is not None and key < self._last_key:
            self.in_order = False
        self._last_key = key
        self.further_fields.update(record)
        self._spool.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self.count += 1

    def records(self, stack: ExitStack) -> Iterator[dict[str, Any]]:
        """Every record in ``calldate``, ``id`` order; sorted runs live in files of ``stack``."""
        self._spool.seek(0)
        lines = (json.loads(line) for line in self._spool)
        if self.in_order:
            return lines
        runs = [_sorted_run(batch, stack) for batch in _batches(lines, SORT_RUN_RECORDS)]
        return heapq.merge(*runs, key=_order_key)


def _batches(records: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _sorted_run(batch: list[dict[str, Any]], stack: ExitStack) -> Iterator[dict[str, Any]]:
    run = stack.enter_context(tempfile.TemporaryFile())
    for record in sorted(batch, key=_order_key):
        run.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
    run.seek(0)
    return (json.loads(line) for line in run)


class _HashingSink:
    """What ``csv.writer`` writes to: text encoded as UTF-8 into a file, counted and hashed."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._file = fileobj
        self.size = 0
        self._sha256 = hashlib.sha256()

    def write(self, text: str) -> int:
        data = text.encode()
        self._file.write(data)
        self._sha256.update(data)
        self.size += len(data)
        return len(text)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


def write_cdr_csv(
    records: Iterable[Mapping[str, Any]], columns: Sequence[str], out: IO[bytes]
) -> tuple[int, int, str]:
    """Write the header and one row per record to ``out``; return ``(rows, size, sha256)``."""
    sink = _HashingSink(out)
    writer = csv.writer(sink, lineterminator="\r\n")
    writer.writerow(columns)
    rows = 0
    for record in records:
        writer.writerow([csv_cell(record.get(column)) for column in columns])
        rows += 1
    return rows, sink.size, sink.sha256


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def users_to_export(voip_hook, day: dt.date, listed: Iterable[int] = ()) -> list[int]:
    """Every user with a CDR on ``day``, plus the ``listed`` ones, ascending."""
    since, until = day_bounds(day)
    users = set(int(u) for u in listed)
    for cdr in voip_hook.iter_records("cdrs", since=since, until=until):
        if cdr.get("user_id") is not None:
            users.add(int(cdr["user_id"]))
    return sorted(users)


def user_batches(user_ids: Sequence[int], size: int) -> list[list[int]]:
    """Users cut into groups of ``size``, one mapped task each."""
    if size < 1:
        raise ValueError("users_per_batch must be at least 1")
    return [list(user_ids[i : i + size]) for i in range(0, len(user_ids), size)]


def export_user_day(
    voip_hook, s3_client, bucket: str, prefix: str, user_id: int, day: dt.date
) -> dict[str, Any]:
    """Build one user's CSV of one day from their CDR records and upload it.

    Raises :class:`ExportMismatchError` (nothing uploaded) when the rows differ from the
    API's count of the user's CDRs of the day, or a record is not the user's or the day's.

    :return: ``{"user_id", "key", "rows", "bytes", "sha256"}``.
    """
    since, until = day_bounds(day)
    key = cdr_csv_key(prefix, user_id, day)
    mine = [Filter("user_id", "eq", int(user_id))]
    with ExitStack() as stack:
        spool = CdrSpool(
            stack.enter_context(tempfile.SpooledTemporaryFile(max_size=SPOOL_SIZE)), user_id, day
        )
        for record in voip_hook.iter_records("cdrs", since=since, until=until, filters=mine):
            spool.add(record)
        expected = voip_hook.count("cdrs", since=since, until=until, filters=mine)
        if spool.count != expected:
            raise ExportMismatchError(
                f"{spool.count} CDRs listed but the API counts {expected} for user "
                f"{user_id} on {day}"
            )
        out = stack.enter_context(tempfile.SpooledTemporaryFile(max_size=SPOOL_SIZE))
        columns = csv_columns(spool.further_fields)
        rows, size, digest = write_cdr_csv(spool.records(stack), columns, out)
        if rows != expected:  # the spool lost or repeated a record
            raise ExportMismatchError(f"CSV has {rows} rows but the API counts {expected} CDRs")
        out.seek(0)
        s3_client.put_object(
            Bucket=bucket,
            Key=key,
            Body=out,
            ContentLength=size,
            ContentType="text/csv",
            Metadata={"sha256": digest, "size": str(size), "rows": str(rows)},
            ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
        )
    log.info("user %s %s: %d rows to s3://%s/%s", user_id, day, rows, bucket, key)
    return {"user_id": int(user_id), "key": key, "rows": rows, "bytes": size, "sha256": digest}
