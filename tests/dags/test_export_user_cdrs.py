"""``voipstudio_export_user_cdrs`` run by Airflow against the sandbox and SeaweedFS."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import hashlib
import io

import pytest
from voipstudio_provider.endpoints import RESOURCES
from voipstudio_provider.layout import cdr_csv_key, parse_api_datetime

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


@pytest.mark.slow
def test_one_csv_per_user_with_calls_and_header_only_for_a_listed_user(airflow_env, capfd, caplog):
    days = calls_per_user_and_day(airflow_env.sandbox)
    # The most recent full day on which at least two users called.
    day = max(d for d, users in days.items() if len(users) >= 2 and d < TODAY.date())
    callers = days[day]
    all_users = [u["id"] for u in airflow_env.sandbox.control("GET", "records/users")["data"]]
    quiet_user = next(u for u in all_users if u not in callers)
    airflow_env.set_variable("voipstudio_export_user_ids", [quiet_user])

    dag_run = run_export(TODAY, {"day": day.isoformat(), "users_per_batch": 1})
    assert dag_run.state == "success"

    s3 = airflow_env.s3()
    expected = {cdr_csv_key(airflow_env.prefix, u, day) for u in [*callers, quiet_user]}
    assert set(airflow_env.keys("cdr-csv/")) == expected
    for user_id in [*callers, quiet_user]:
        obj = s3.get_object(
            Bucket=airflow_env.bucket, Key=cdr_csv_key(airflow_env.prefix, user_id, day)
        )
        body = obj["Body"].read()
        rows = list(csv.reader(io.StringIO(body.decode())))
        assert tuple(rows[0]) == RESOURCES["cdrs"].fields
        assert len(rows) - 1 == callers.get(user_id, 0)
        assert all(row[rows[0].index("user_id")] == str(user_id) for row in rows[1:])
        assert obj["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
        assert obj["Metadata"]["rows"] == str(callers.get(user_id, 0))
        assert obj["ContentType"].startswith("text/csv")

    out, err = capfd.readouterr()
    out += caplog.text  # task logs reach stdout or the logging capture
    assert f"{len(callers) + 1} of {len(callers) + 1} users exported" in out + err
    assert airflow_env.sandbox.token not in out + err


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
    from voipstudio_provider.export import export_day

    end = dt.datetime(2026, 11, 20, 3, tzinfo=dt.UTC)
    assert export_day(end) == dt.date(2026, 11, 19)
    assert export_day(end, "2026-06-01") == dt.date(2026, 6, 1)


def test_row_counter_counts_records_not_line_breaks_inside_quoted_fields():
    from voipstudio_provider.export import CsvRowCounter

    text = 'id,info\r\n1,"two\r\nlines"\r\n2,"a ""quoted"" word"\r\n3,plain'
    spool = io.BytesIO()
    counter = CsvRowCounter(spool)
    for index in range(0, len(text), 3):  # chunk borders fall inside quotes and line breaks
        counter.write(text[index : index + 3].encode())
    assert counter.records == len(list(csv.reader(io.StringIO(text)))) == 4
    assert counter.sha256 == hashlib.sha256(text.encode()).hexdigest()

    counter.seek(0)  # a retried download starts over
    spool.truncate()
    counter.write(b"id,info\r\n")
    assert (counter.records, counter.size) == (1, 9)
