"""The Airflow plugin that adds the Archive page, registered through the provider metadata
(``get_provider_info()["plugins"]``).

Airflow loads a provider's plugins only when providers are discovered eagerly
(``[core] lazy_discover_providers = False``, ``AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS=False``)
on the API server; with the default lazy discovery the page is not there.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from voipstudio_provider.ui.app import URL_PREFIX, URL_ROUTE, create_app


class VoIPstudioArchivePlugin(AirflowPlugin):
    """The Archive page: a FastAPI app on the API server, shown in the UI's Browse menu."""

    name = "voipstudio_archive"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "VoIPstudio Archive"}]
    external_views = [
        {
            "name": "Archive",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": URL_ROUTE,
        }
    ]
