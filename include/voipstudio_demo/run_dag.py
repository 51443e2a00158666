"""Run one DAG once, in this process, without task retries: ``python -m voipstudio_demo.run_dag
DAG_ID LOGICAL_DATE CONF_JSON``. Exit status 0 when the run succeeded.

Like ``airflow dags test``, but a failing task fails the demo's run at once instead of
waiting minutes for the retries a production schedule wants.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    dag_id, logical_date, conf = argv[0], argv[1], json.loads(argv[2] if len(argv) > 2 else "{}")

    import pendulum
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors or dag_id not in bag.dags:
        print(f"cannot load {dag_id}: {bag.import_errors or 'no such DAG'}", file=sys.stderr)
        return 2
    dag = bag.dags[dag_id]
    for task in dag.tasks:
        if hasattr(task, "partial_kwargs"):  # a mapped task
            task.partial_kwargs["retries"] = 0
        else:
            task.retries = 0
    dag_run = dag.test(logical_date=pendulum.parse(logical_date), run_conf=conf)
    print(f"demo run of {dag_id} ended: state={dag_run.state}")
    return 0 if dag_run.state == "success" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
