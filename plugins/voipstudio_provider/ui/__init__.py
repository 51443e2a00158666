"""The Archive page in the Airflow UI: a read-only FastAPI app on the API server."""
