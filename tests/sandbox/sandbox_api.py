"""A client of the sandbox's History API for tests, and its raw state for comparison."""

from __future__ import annotations

import json
from typing import Any

import requests
from voipstudio_devstack import SandboxServer


class Api:
    """A ``requests`` session on the sandbox's History API with a token of choice."""

    def __init__(self, server: SandboxServer, token: str | None = None) -> None:
        self.server = server
        self.session = requests.Session()
        if token is not None:
            self.session.headers["X-Auth-Token"] = token

    def url(self, path: str) -> str:
        return self.server.base_url + path

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url(path), **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def page(self, resource_path: str, **params: Any) -> dict[str, Any]:
        if isinstance(params.get("filter"), list):
            params["filter"] = json.dumps(params["filter"])
        response = self.get(resource_path, params=params)
        assert response.status_code == 200, response.text
        return response.json()


def records(server: SandboxServer, resource: str) -> list[dict[str, Any]]:
    """The sandbox's raw rows of ``resource`` (the truth to compare answers with)."""
    return server.control("GET", f"records/{resource}")["data"]
