"""The DAG folder as Airflow's DAG processor sees it: every DAG parses, fast, and documented."""

from __future__ import annotations

import datetime as dt
import time

import pendulum
import pytest

from tests.dags.conftest import DAGS_FOLDER

DAG_IDS = {
    "voipstudio_archive_recordings",
    "voipstudio_archive_pcaps",
    "voipstudio_export_user_cdrs",
    "voipstudio_retention",
    "voipstudio_compliance_purge",
    "voipstudio_reconcile",
}
# Run by a person from the UI form only, never on a schedule.
MANUAL_DAG_ID = "voipstudio_compliance_purge"
# Airflow's default ``core.dagbag_import_timeout``: a file slower than this is an error.
DAGBAG_IMPORT_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    started = time.perf_counter()
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    seconds = time.perf_counter() - started
    print(f"parsed {len(bag.dags)} DAGs from {DAGS_FOLDER} in {seconds:.2f} s")
    bag.parse_seconds = seconds
    return bag


def test_dag_folder_parses_without_errors_well_within_the_import_timeout(dag_bag):
    assert dag_bag.import_errors == {}
    assert dag_bag.parse_seconds < DAGBAG_IMPORT_TIMEOUT
    for stat in dag_bag.dagbag_stats:
        assert stat.duration.total_seconds() < DAGBAG_IMPORT_TIMEOUT


def test_each_dag_exists_once_one_file_per_dag(dag_bag):
    assert set(dag_bag.dag_ids) == DAG_IDS
    files = [dag_bag.dags[dag_id].fileloc for dag_id in DAG_IDS]
    assert len(set(files)) == len(DAG_IDS)
    assert {f.rsplit("/", 1)[1] for f in files} == {f"{dag_id}.py" for dag_id in DAG_IDS}


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_dag_is_documented_owned_tagged_and_retried(dag_bag, dag_id):
    dag = dag_bag.dags[dag_id]
    assert dag.doc_md and len(dag.doc_md) > 200 and dag.doc_md.lstrip().startswith("#")
    assert "voipstudio" in dag.tags
    for task in dag.tasks:
        assert task.owner == "voipstudio"
    assert dag.default_args["retries"] >= 1
    assert dag.default_args["retry_exponential_backoff"] is True
    assert dag.default_args["retry_delay"] > dt.timedelta(0)


def test_the_compliance_purge_is_never_scheduled(dag_bag):
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.simple import NullTimetable

    timetable = coerce_to_core_timetable(dag_bag.dags[MANUAL_DAG_ID].timetable)
    assert isinstance(timetable, NullTimetable)


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS - {MANUAL_DAG_ID}))
def test_timetable_has_data_intervals_that_abut(dag_bag, dag_id):
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import TimeRestriction
    from airflow.timetables.interval import CronDataIntervalTimetable, DeltaDataIntervalTimetable

    timetable = coerce_to_core_timetable(dag_bag.dags[dag_id].timetable)
    assert isinstance(timetable, CronDataIntervalTimetable | DeltaDataIntervalTimetable)
    restriction = TimeRestriction(
        earliest=pendulum.datetime(2026, 3, 1, tz="UTC"), latest=None, catchup=True
    )
    first = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    second = timetable.next_dagrun_info(
        last_automated_data_interval=first.data_interval, restriction=restriction
    )
    for info in (first, second):
        assert info.data_interval.start < info.data_interval.end
    assert second.data_interval.start == first.data_interval.end

    day = pendulum.datetime(2026, 11, 20, tz="UTC")
    manual = timetable.infer_manual_data_interval(run_after=day)
    assert manual.start < manual.end <= day
