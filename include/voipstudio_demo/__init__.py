"""The pieces of ``make demo``: local servers, an Airflow home, DAG runs, the report."""
