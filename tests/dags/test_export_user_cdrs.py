"""``voipstudio_export_user_cdrs`` run by Airflow against the sandbox and SeaweedFS."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import hashlib
import io
import json

import pytest
from voipstudio_provider.endpoints import RESOURCES, parse_api_datetime
from voipstudio_provider.engine.layout import cdr_csv_key

from tests.dags.conftest import load_dag

DAG_ID = "voipstudio_export_user_cdrs"
TODAY = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def calls_per_user_and_day(sandbox) -> dict[dt.date, collections.Counter]:
    days: dict[dt.date, collections.Counter] = collections.defaultdict(collections.Counter)
    for cdr in sandbox.control("GET", "records/cdrs")["data"]:
        days[parse_api_datetime(cdr["calldate"]).date()][cdr["user_id"]] += 1
    return days


def run_export(logical_date: dt.datetime, conf: dict | None = None):
    dag = load_dag(DAG_ID)
    for task in dag.tasks:  # no retries: a broken run fails at once
        if task.task_id == "export_user_cdrs_batch":
            task.partial_kwargs["retries"] = 0
        else:
            task.retries = 0
    return dag.test(logical_date=logical_date, run_conf=conf or {})


def read_csv(airflow_env, user_id: int, day: dt.date) -> tuple[dict, list[list[str]]]:
    obj = airflow_env.s3().get_object(
        Bucket=airflow_env.bucket, Key=cdr_csv_key(airflow_env.prefix, user_id, day)
    )
    body = obj["Body"].read()
    assert obj["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert obj["Metadata"]["size"] == str(len(body)) == str(obj["ContentLength"])
    assert obj["ContentType"].startswith("text/csv")
    return obj, list(csv.reader(io.StringIO(body.decode(), newline="")))


def cell(value) -> str:
    """How the export writes a record's value: text as it is, the rest as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


@pytest.mark.slow
def test_one_csv_per_user_with_calls_and_header_only_for_a_listed_user(airflow_env, capfd, caplog):
    sandbox = airflow_env.sandbox
    assert sandbox.control("GET", "settings")["csv_export"] == "job"  # as the real service
    days = calls_per_user_and_day(sandbox)
    # The most recent full day on which at least two users called.
    day = max(d for d, users in days.items() if len(users) >= 2 and d < TODAY.date())
    callers = days[day]
    all_users = [u["id"] for u in sandbox.control("GET", "records/users")["data"]]
    quiet_user = next(u for u in all_users if u not in callers)
    airflow_env.set_variable("voipstudio_export_user_ids", [quiet_user])

    dag_run = run_export(TODAY, {"day": day.isoformat(), "users_per_batch": 1})
    assert dag_run.state == "success"

    expected = {cdr_csv_key(airflow_env.prefix, u, day) for u in [*callers, quiet_user]}
    assert set(airflow_env.keys("cdr-csv/")) == expected
    truth = sandbox.control("GET", "records/cdrs")["data"]
    further = ["labels", "metadata", "nb_notes"]  # beyond the reference, by name
    for user_id in [*callers, quiet_user]:
        mine = sorted(
            (c for c in truth if c["user_id"] == user_id and c["calldate"][:10] == str(day)),
            key=lambda c: (c["calldate"], c["id"]),
        )
        obj, rows = read_csv(airflow_env, user_id, day)
        # A day without calls has only the reference's columns: no record sent more.
        header = [*RESOURCES["cdrs"].fields, *(further if mine else [])]
        assert rows[0] == header
        assert [int(row[0]) for row in rows[1:]] == [c["id"] for c in mine]
        assert rows[1:] == [[cell(c.get(f)) for f in header] for c in mine]
        assert obj["Metadata"]["rows"] == str(len(mine)) == str(callers.get(user_id, 0))
        assert not [c for c in truth if c["user_id"] == user_id and c["calldate"][:10] == str(day)
                    and c["id"] not in {int(row[0]) for row in rows[1:]}]  # fmt: skip

    csv_requests = [r for r in sandbox.control("GET", "requests")["data"] if ".csv" in r["path"]]
    assert csv_requests == []  # built from the records, never from the export endpoint
    out, err = capfd.readouterr()
    out += caplog.text  # task logs reach stdout or the logging capture
    assert f"{len(callers) + 1} of {len(callers) + 1} users exported" in out + err
    assert sandbox.token not in out + err


@pytest.mark.slow
def test_extra_fields_and_both_encodings_of_enumerations_reach_the_csv_as_sent(airflow_env):
    sandbox = airflow_env.sandbox
    # An account that mixes encodings (no real one does): the CSV copes with either in one
    # run, in one file, and writes each value as the API sent it.
    sandbox.control("PUT", "settings", {"enums": "mixed"})
    truth = sandbox.control("GET", "records/cdrs")["data"]
    by_user_day = collections.defaultdict(list)
    for cdr in truth:
        if cdr["calldate"][:10] < str(TODAY.date()):
            by_user_day[cdr["user_id"], cdr["calldate"][:10]].append(cdr)
    (user_id, day_text), mine = next(
        (key, cdrs) for key, cdrs in sorted(by_user_day.items(), key=lambda kv: kv[0][1],
                                            reverse=True)
        if {type(c["type"]) for c in cdrs} == {int, str}
    )  # fmt: skip
    day = dt.date.fromisoformat(day_text)
    dag_run = run_export(TODAY, {"day": day.isoformat()})
    assert dag_run.state == "success"

    _, rows = read_csv(airflow_env, user_id, day)
    header = rows[0]
    written = {int(r[0]): r for r in rows[1:]}
    assert set(written) == {c["id"] for c in mine}
    for cdr in mine:
        row = written[cdr["id"]]
        for field in ("type", "disposition", "destination"):
            assert row[header.index(field)] == str(cdr[field])  # "I" as "I", 1 as "1"
        assert row[header.index("call_id")] == str(cdr["call_id"])
        assert json.loads(row[header.index("labels")]) == cdr["labels"]
        assert row[header.index("nb_notes")] == str(cdr["nb_notes"])


@pytest.mark.slow
def test_calls_whose_ids_do_not_rise_with_calldate_are_written_in_calldate_order(
    airflow_env, monkeypatch
):
    from voipstudio_provider.engine.exports import cdr_csv

    monkeypatch.setattr(cdr_csv, "SORT_RUN_RECORDS", 3)  # several sorted runs to merge
    sandbox = airflow_env.sandbox
    days = calls_per_user_and_day(sandbox)
    day, user_id = next((d, u) for d in sorted(days, reverse=True) if d < TODAY.date()
                        for u, n in days[d].items() if n >= 2)  # fmt: skip
    # Calls that reach the API late: higher ids, earlier and later times of the same day.
    for calldate in (f"{day} 00:00:01", f"{day} 23:59:59", f"{day} 00:00:02"):
        sandbox.control(
            "POST", "records/cdrs", {"fields": {"user_id": user_id, "calldate": calldate}}
        )

    dag_run = run_export(TODAY, {"day": day.isoformat()})
    assert dag_run.state == "success"

    _, rows = read_csv(airflow_env, user_id, day)
    truth = sandbox.control("GET", "records/cdrs")["data"]
    mine = [c for c in truth if c["user_id"] == user_id and c["calldate"][:10] == str(day)]
    by_time = sorted(mine, key=lambda c: (c["calldate"], c["id"]))
    assert [int(r[0]) for r in rows[1:]] == [c["id"] for c in by_time]
    assert by_time != sorted(mine, key=lambda c: c["id"])  # the order really was rearranged


class _CallArrivesAfterTheWalk:
    """The hook, with one more call of the user reaching the API once the walk has ended."""

    def __init__(self, hook, sandbox, user_id: int) -> None:
        self._hook, self._sandbox, self._user_id = hook, sandbox, user_id

    def iter_records(self, *args, **kwargs):
        yield from self._hook.iter_records(*args, **kwargs)
        self._sandbox.control("POST", "records/cdrs", {"fields": {"user_id": self._user_id}})

    def count(self, *args, **kwargs):
        return self._hook.count(*args, **kwargs)


def test_a_csv_whose_rows_differ_from_the_apis_total_is_not_written(airflow_env):
    from voipstudio_provider.engine.exports.cdr_csv import ExportMismatchError, export_user_day
    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    sandbox = airflow_env.sandbox
    today = dt.datetime.now(dt.UTC).date()
    sandbox.control("POST", "records/cdrs", {"count": 2, "fields": {"user_id": 1003}})
    hook = _CallArrivesAfterTheWalk(VoIPstudioHook("voipstudio_default"), sandbox, 1003)
    with pytest.raises(ExportMismatchError, match="2 CDRs listed but the API counts 3"):
        export_user_day(hook, airflow_env.s3(), airflow_env.bucket, airflow_env.prefix, 1003, today)
    assert airflow_env.keys("cdr-csv/") == []


def test_records_of_another_user_or_day_are_refused():
    from voipstudio_provider.engine.exports.cdr_csv import CdrSpool, ExportMismatchError

    spool = CdrSpool(io.BytesIO(), 1001, dt.date(2026, 5, 4))
    spool.add({"id": 1, "user_id": 1001, "calldate": "2026-05-04 10:00:00"})
    with pytest.raises(ExportMismatchError, match="CDR 2 .user 1002"):
        spool.add({"id": 2, "user_id": 1002, "calldate": "2026-05-04 11:00:00"})
    with pytest.raises(ExportMismatchError, match="'2026-05-05 00:00:00'"):
        spool.add({"id": 3, "user_id": 1001, "calldate": "2026-05-05 00:00:00"})
    assert spool.count == 1


def test_records_are_put_in_calldate_then_id_order_through_sorted_runs(monkeypatch):
    from contextlib import ExitStack

    from voipstudio_provider.engine.exports import cdr_csv

    monkeypatch.setattr(cdr_csv, "SORT_RUN_RECORDS", 2)
    spool = cdr_csv.CdrSpool(io.BytesIO(), 7, dt.date(2026, 5, 4))
    times = ["09:00:00", "08:00:00", "08:00:00", "23:00:00", "00:00:00"]
    for record_id, time in enumerate(times, start=1):
        spool.add({"id": record_id, "user_id": 7, "calldate": f"2026-05-04 {time}"})
    assert not spool.in_order
    with ExitStack() as stack:
        assert [r["id"] for r in spool.records(stack)] == [5, 2, 3, 1, 4]


def test_csv_columns_are_the_reference_then_further_fields_by_name():
    from voipstudio_provider.engine.exports.cdr_csv import csv_cell, csv_columns

    columns = csv_columns(["zeta", "labels", "id", "alpha"])
    assert columns == [*RESOURCES["cdrs"].fields, "alpha", "labels", "zeta"]
    assert [csv_cell(v) for v in (None, "I", 2, 0.05, True, ["vip", "é"], {"a": 1})] == [
        "", "I", "2", "0.05", "true", '["vip","é"]', '{"a":1}',
    ]  # fmt: skip


@pytest.mark.slow
def test_scheduled_run_exports_the_day_before_its_interval_end(airflow_env):
    # A manual run at today 00:00 gets the interval ending yesterday 03:00: it exports the
    # day before yesterday.
    day = (TODAY - dt.timedelta(days=2)).date()
    callers = calls_per_user_and_day(airflow_env.sandbox).get(day, collections.Counter())
    dag_run = run_export(TODAY)
    assert dag_run.state == "success"
    assert dag_run.data_interval_end.date() == day + dt.timedelta(days=1)
    assert set(airflow_env.keys("cdr-csv/")) == {
        cdr_csv_key(airflow_env.prefix, u, day) for u in callers
    }


def test_export_day_is_the_day_before_the_interval_end_unless_given():
    from voipstudio_provider.tasks.export import export_day

    end = dt.datetime(2026, 11, 20, 3, tzinfo=dt.UTC)
    assert export_day(end) == dt.date(2026, 11, 19)
    assert export_day(end, "2026-06-01") == dt.date(2026, 6, 1)
