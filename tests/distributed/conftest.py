"""A distributed Airflow for the module: its own database, broker db, home and bucket."""

from __future__ import annotations

import uuid

import pytest
from airflow_cluster import running_cluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, show the tail of every Airflow process's log under the report."""
    outcome = yield
    report = outcome.get_result()
    cluster = getattr(item, "funcargs", {}).get("airflow_cluster")
    if report.failed and cluster is not None:
        report.sections.append(("Airflow process logs", cluster.log_tails()))


def _why_celery_cannot_run() -> str | None:
    """Why the CeleryExecutor cannot load in this environment, or ``None``."""
    try:
        import airflow.providers.celery.executors.celery_executor_utils  # noqa: F401
    except ImportError as error:
        # celery 5.7 dropped celery.backends.database.retry, which the provider imports.
        return f"the CeleryExecutor does not import ({error}); pin celery<5.7 and kombu<5.7"
    return None


#: The purge's asker and approver, users of the simple auth manager beside ``ops``.
PURGE_USERS = ("alice", "bob")


@pytest.fixture(scope="session")
def archive_prefix() -> str:
    return "voipstudio-it"


@pytest.fixture(scope="session")
def archive_bucket(seaweed) -> str:
    """The bucket the DAGs write to; like a deployment's, it exists before the first run."""
    name = f"voipstudio-it-{uuid.uuid4().hex[:8]}"
    seaweed.client().create_bucket(Bucket=name)
    return name


# One cluster for the session: starting one takes minutes, and every module drives it
# through the REST API only, as separate operators of one deployment would.
@pytest.fixture(scope="session")
def airflow_cluster(tmp_path_factory, sandbox_server, seaweed, archive_bucket, archive_prefix):
    """PostgreSQL, Redis, API server, scheduler, DAG processor, triggerer, two Celery workers.

    Connections and Variables come from ``AIRFLOW_CONN_*`` / ``AIRFLOW_VAR_*`` as in a
    deployment; the ``voipstudio_api`` pool is created with the CLI. Every process is
    stopped, the database dropped and the broker db flushed, whatever happens.
    """
    # A CeleryExecutor that cannot start is a broken deployment, not a reason to skip.
    if reason := _why_celery_cannot_run():
        pytest.fail(reason)
    extra_env = {
        "AIRFLOW_VAR_VOIPSTUDIO_S3_PREFIX": archive_prefix,
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
    }
    with running_cluster(
        tmp_path_factory, sandbox_server, seaweed, archive_bucket, extra_env, users=PURGE_USERS
    ) as cluster:
        yield cluster
