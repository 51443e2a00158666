"""Fixtures for talking to the sandbox the way a client of the real service would."""

from __future__ import annotations

import pytest
from voipstudio_devstack import SandboxServer

from tests.sandbox.sandbox_api import Api


@pytest.fixture
def api(sandbox: SandboxServer) -> Api:
    """The reset sandbox's API with the account root's token."""
    return Api(sandbox, sandbox.token)


@pytest.fixture
def user_api(sandbox: SandboxServer) -> Api:
    """The reset sandbox's API as user 1002, who is not the account root."""
    return Api(sandbox, f"{sandbox.token}-user-1002")
