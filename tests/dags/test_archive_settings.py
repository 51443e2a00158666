"""Where the archive writes: DAG params over Variables over defaults."""

from __future__ import annotations

import datetime as dt

import pytest


@pytest.fixture
def no_variables(monkeypatch):
    for name in ("VOIPSTUDIO_S3_BUCKET", "VOIPSTUDIO_S3_PREFIX", "VOIPSTUDIO_S3_OPTIONS"):
        monkeypatch.delenv(f"AIRFLOW_VAR_{name}", raising=False)


def test_defaults_then_variables_then_params(no_variables, monkeypatch):
    from voipstudio_provider.tasks.settings import resolve_bucket_and_prefix, resolve_s3_options

    assert resolve_bucket_and_prefix({}) == ("voipstudio-archive", "voipstudio")
    monkeypatch.setenv("AIRFLOW_VAR_VOIPSTUDIO_S3_BUCKET", "from-variable")
    monkeypatch.setenv("AIRFLOW_VAR_VOIPSTUDIO_S3_PREFIX", "/var/prefix/")
    assert resolve_bucket_and_prefix({"bucket": None, "prefix": ""}) == (
        "from-variable",
        "var/prefix",
    )
    assert resolve_bucket_and_prefix({"bucket": "from-param", "prefix": "p"}) == (
        "from-param",
        "p",
    )

    assert resolve_s3_options({}) == {}
    monkeypatch.setenv(
        "AIRFLOW_VAR_VOIPSTUDIO_S3_OPTIONS", '{"sse": "aws:kms", "kms_key_id": "alias/archive"}'
    )
    assert resolve_s3_options({"sse": "AES256", "object_lock_days": "3"}) == {
        "sse": "AES256",
        "kms_key_id": "alias/archive",
        "object_lock_days": 3,
    }
    monkeypatch.setenv("AIRFLOW_VAR_VOIPSTUDIO_S3_OPTIONS", '{"encryption": "yes"}')
    with pytest.raises(ValueError, match="unknown options"):
        resolve_s3_options({})


@pytest.mark.slow
def test_bucket_and_prefix_params_override_the_variables(airflow_env, run_dag):
    other = f"{airflow_env.bucket}-param"
    airflow_env.s3().create_bucket(Bucket=other)
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    conf = {"bucket": other, "prefix": "custom/archive", "lookback_hours": 14 * 24}
    dag_run = run_dag("voipstudio_archive_recordings", logical_date=today, conf=conf)
    assert dag_run.state == "success"

    listing = airflow_env.s3().list_objects_v2(Bucket=other).get("Contents", [])
    keys = [o["Key"] for o in listing]
    assert keys and all(k.startswith("custom/archive/") for k in keys)
    assert any(k.startswith("custom/archive/recordings/date=") for k in keys)
    assert airflow_env.keys() == []  # nothing went to the Variable's bucket
