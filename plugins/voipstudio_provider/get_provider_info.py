"""What Airflow's ProvidersManager learns about this provider (the ``apache_airflow_provider``
entry point). The connection form is declared as data, as Airflow 3.2+ expects."""

from __future__ import annotations

from typing import Any

from voipstudio_provider import __version__

INTEGRATION = "VoIPstudio"
#: What the form shows until changed: the hook's own defaults (this module does not import
#: the hook, so that the API server draws the form without it; a test keeps them equal).
FORM_PAGE_SIZE = 1000
FORM_TIMEOUT = 300


def get_provider_info() -> dict[str, Any]:
    """Describe the provider: its hooks and the ``voipstudio`` connection type and form."""
    return {
        "package-name": "airflow-provider-voipstudio",
        "name": "VoIPstudio",
        "description": (
            "`VoIPstudio <https://voipstudio.com/>`__ History API: call detail records, "
            "call recordings, voicemail, PCAPs, CDR exports and retention deletes.\n"
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://voipstudio.com/app/api/",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["voipstudio_provider.operators.voipstudio"],
            }
        ],
        "transfers": [
            {
                "source-integration-name": INTEGRATION,
                "target-integration-name": "Amazon Simple Storage Service (S3)",
                "python-module": "voipstudio_provider.transfers.voipstudio_to_s3",
            }
        ],
        "hooks": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["voipstudio_provider.hooks.voipstudio"],
            }
        ],
        # Loaded by Airflow when providers are discovered eagerly
        # ([core] lazy_discover_providers = False): the Archive page of the UI.
        "plugins": [
            {
                "name": "voipstudio_archive",
                "plugin-class": "voipstudio_provider.ui.plugin.VoIPstudioArchivePlugin",
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "voipstudio_provider.hooks.voipstudio.VoIPstudioHook",
                "connection-type": "voipstudio",
                "hook-name": "VoIPstudio",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "extra"],
                    "relabeling": {
                        "host": "Base URL",
                        "login": "User ID or e-mail (optional)",
                        "password": "API token",
                    },
                    "placeholders": {
                        "host": "https://l7api.com/v1.1/voipstudio",
                        "login": "user id (1234) or e-mail: Basic auth instead of X-Auth-Token",
                        "password": "an API key from the dashboard or POST /apitokens",
                        "page_size": str(FORM_PAGE_SIZE),
                        "timeout": str(FORM_TIMEOUT),
                    },
                },
                "conn-fields": {
                    "page_size": {
                        "label": "Page size",
                        "description": "Rows per page when walking a collection (at most 5000).",
                        "schema": {
                            "type": ["integer", "null"],
                            "minimum": 1,
                            "maximum": 5000,
                            "default": FORM_PAGE_SIZE,
                        },
                    },
                    "timeout": {
                        "label": "Read timeout (seconds)",
                        "description": "Seconds to wait for the server between bytes; "
                        "connecting waits at most 10 seconds.",
                        "schema": {
                            "type": ["number", "null"],
                            "exclusiveMinimum": 0,
                            "default": FORM_TIMEOUT,
                        },
                    },
                    "verify_ssl": {
                        "label": "Verify TLS certificate",
                        "description": "Turn off only for a test server with a self-signed "
                        "certificate.",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                },
            }
        ],
    }
