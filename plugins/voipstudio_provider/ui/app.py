"""The Archive page's routes: the page itself (``/``) and its data (``/overview``).

Airflow mounts a plugin's FastAPI app on the API server but does not authenticate its
routes. Every route here depends on :func:`archive_reader`, which reads the same JWT the
Airflow UI sends (its ``_token`` cookie, or an ``Authorization: Bearer`` header) through
Airflow's own :func:`~airflow.api_fastapi.core_api.security.get_user` (401 without a token or
with an expired one, 403 with an invalid one), then asks the auth manager whether that user
may read what the page shows (403 otherwise).
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import (
    DagAccessEntity,
    DagDetails,
    VariableDetails,
)
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.responses import HTMLResponse
from jinja2 import Environment, select_autoescape

from voipstudio_provider.engine.evidence.audit import REASONS
from voipstudio_provider.engine.evidence.coverage import COVERAGE_COUNTS
from voipstudio_provider.tasks.settings import HOLD_VARIABLE
from voipstudio_provider.ui.overview import DAG_IDS, PURGE_DAG_ID, archive_overview

#: Where the app is mounted on the API server, and the UI route of its page.
URL_PREFIX = "/voipstudio-archive"
URL_ROUTE = "voipstudio-archive"


def archive_reader(user: GetUserDep) -> BaseUser:
    """The logged-in user, if they may read the page: the runs of the reconciliation,
    retention and purge DAGs, the purge's approval requests, and the legal hold Variable
    (the page shows the held ids and numbers)."""
    manager = get_auth_manager()
    allowed = all(
        manager.is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id),
            user=user,
        )
        for dag_id in DAG_IDS
    )  # fmt: skip
    allowed = allowed and manager.is_authorized_dag(
        method="GET",
        access_entity=DagAccessEntity.HITL_DETAIL,
        details=DagDetails(id=PURGE_DAG_ID),
        user=user,
    )
    allowed = allowed and manager.is_authorized_variable(
        method="GET", details=VariableDetails(key=HOLD_VARIABLE), user=user
    )
    if not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")
    return user


ReaderDep = Annotated[BaseUser, Depends(archive_reader)]

_templates = Environment(autoescape=select_autoescape(default=True), trim_blocks=True,
                         lstrip_blocks=True)  # fmt: skip


def _template():
    source = resources.files(__package__).joinpath("templates/archive.html").read_text()
    return _templates.from_string(source)


def create_app() -> FastAPI:
    """The Archive page's app, as the plugin mounts it at :data:`URL_PREFIX`."""
    app = FastAPI(
        title="VoIPstudio Archive",
        description="Read-only view of the archive bucket: coverage, deleting runs, holds and "
        "purges waiting for approval. Requires a user logged in to Airflow.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/overview")
    def overview(user: ReaderDep, session: SessionDep) -> dict[str, Any]:
        """Every section of the page, as JSON."""
        return archive_overview(session)

    @app.get("/", response_class=HTMLResponse)
    def page(user: ReaderDep, session: SessionDep) -> HTMLResponse:
        """The page: rendered here, no script, so it reads the same in any browser."""
        data = archive_overview(session)
        html = _template().render(
            data=data, counts=COVERAGE_COUNTS, reasons=REASONS, user=user.get_name()
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    return app
