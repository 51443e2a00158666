"""Apache Airflow provider for the VoIPstudio History API."""

__version__ = "0.1.0"
