"""``tasks.erasure.erase_archived_copies``: a purge's erasure of the archived copies, with
the Variables and connections a purge run has (``AIRFLOW_VAR_*``, ``AIRFLOW_CONN_*``)."""

from __future__ import annotations

import uuid

import pytest
from voipstudio_provider.engine.subjects.subject_index import SubjectIndex
from voipstudio_provider.tasks.erasure import erase_archived_copies
from voipstudio_provider.tasks.settings import ConfigurationError

from tests.dags.test_archive_recordings import run_archive

pytestmark = pytest.mark.slow


def stored(env, keys) -> dict[str, int]:
    s3 = env.s3()
    return {
        k: sum(
            1 for v in s3.list_object_versions(Bucket=env.bucket, Prefix=k).get("Versions", [])
            if v["Key"] == k
        )
        for k in keys
    }  # fmt: skip


@pytest.fixture
def archived(airflow_env):
    env = airflow_env
    env.bucket = f"locked-{uuid.uuid4().hex[:12]}"
    env.s3().create_bucket(Bucket=env.bucket, ObjectLockEnabledForBucket=True)
    env.set_variable("voipstudio_s3_bucket", env.bucket)
    assert run_archive().state == "success"
    return env, SubjectIndex.read(env.s3(), env.bucket, env.prefix)


def test_nothing_is_erased_without_the_erasure_connection(archived):
    env, index = archived
    keys = [k for line in index.lines.values() for k in line["keys"]]
    before = stored(env, keys)
    number = next(line for line in index.lines.values() if line["numbers"])["numbers"][0]

    with pytest.raises(ConfigurationError, match="aws_erasure"):
        erase_archived_copies(number["number"], "erase-run")

    assert stored(env, keys) == before


def test_a_number_erases_its_records_and_a_plan_its_ids(archived):
    env, index = archived
    env.monkeypatch.setenv("AIRFLOW_CONN_AWS_ERASURE", env.seaweed.airflow_conn_uri())
    number = next(line for line in index.lines.values() if line["numbers"])["numbers"][0]
    theirs = index.of_number(number["number"], exact=True)
    others = [line for line in index.lines.values() if line not in theirs]
    planned = others[0]
    rest = others[1:]
    plan = {
        "criteria": {"phone_number": None},
        "resources": {planned["resource"]: {"ids": [planned["record_id"]], "dates": {}}},
    }
    spaced = f"{number['number'][:3]} {number['number'][3:6]} {number['number'][6:]}"

    by_number = erase_archived_copies(spaced, "erase-number", purge_run="purge-1")
    by_plan = erase_archived_copies(plan, "erase-plan", purge_run="purge-2")

    assert by_number["records_erased"] == len(theirs)
    assert by_plan["records_erased"] == 1
    for line in [*theirs, planned]:
        assert set(stored(env, line["keys"]).values()) == {0}
    rest_keys = [k for line in rest for k in line["keys"]]
    assert set(stored(env, rest_keys).values()) == {1}
    left = SubjectIndex.read(env.s3(), env.bucket, env.prefix)
    assert set(left.lines) == {(line["resource"], line["record_id"]) for line in rest}
