"""Session-wide real servers: the VoIPstudio sandbox and SeaweedFS, both on loopback."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from voipstudio_devstack import SandboxServer, SeaweedS3

# Airflow reads its configuration at import: give the test session a home of its own,
# never the user's ~/airflow.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="voipstudio-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# Set before anything imports Airflow: the dags-folder bundle takes its path at import, and
# dag.test() can only serialize DAGs found inside it.
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parents[1] / "dags")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory):
    """A running SeaweedFS S3 server, stopped for certain at the end of the session."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(seaweed: SeaweedS3) -> str:
    """A new, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    seaweed.client().create_bucket(Bucket=name)
    return name


#: Run the suite against another sandbox: ``VOIPSTUDIO_SANDBOX_MAX_PAGE_SIZE=100`` (or
#: ``none``) caps every list page; ``VOIPSTUDIO_SANDBOX_ENUMS=integers`` (or ``mixed``)
#: changes how the account sends enumerations. Unset, the sandbox's defaults.
SANDBOX_MAX_PAGE_SIZE = os.environ.get("VOIPSTUDIO_SANDBOX_MAX_PAGE_SIZE") or None
SANDBOX_ENUMS = os.environ.get("VOIPSTUDIO_SANDBOX_ENUMS") or None


@pytest.fixture(scope="session")
def sandbox_server(tmp_path_factory: pytest.TempPathFactory):
    """The sandbox, seed 1, running for the whole session."""
    server = SandboxServer(
        tmp_path_factory.mktemp("sandbox"),
        seed=1,
        enums=SANDBOX_ENUMS,
        max_page_size=SANDBOX_MAX_PAGE_SIZE,
    )
    server.start()
    try:
        settings = server.control("GET", "settings")
        if SANDBOX_MAX_PAGE_SIZE is not None:  # the session really runs against that sandbox
            cap = None if SANDBOX_MAX_PAGE_SIZE.lower() == "none" else int(SANDBOX_MAX_PAGE_SIZE)
            assert settings["max_page_size"] == cap, settings
        assert SANDBOX_ENUMS is None or settings["enums"] == SANDBOX_ENUMS, settings
        yield server
    finally:
        server.stop()


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxServer:
    """The session's sandbox, reset to its seeded state with no faults and an empty log."""
    sandbox_server.control("POST", "reset")
    return sandbox_server
