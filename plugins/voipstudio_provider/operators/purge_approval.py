"""The approval step of the compliance purge: Airflow's ``ApprovalOperator``, asked with the plan.

The request is written when the task runs, not when the DAG is parsed: its subject and
Markdown body are rendered from the plan ``plan_purge`` wrote (read back from S3 and
checked against the digest it reported), its ``assigned_users`` come from the Variable
``voipstudio_purge_approvers`` without the person who asked, and it stays open for the
run's ``approval_hours``. The answer is judged by
:func:`~voipstudio_provider.tasks.purge.record_answer`: a Reject skips the deletion, a
self-approval or a request nobody answered in time fails the task. There is never a
default option, so a timeout can never approve.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context


class PurgeApprovalOperator(ApprovalOperator):
    """Ask a second person to approve the plan of ``plan_task_id``; return what they decided.

    :param plan_task_id: the task whose XCom is the plan summary (key, CSV key, digest).

    The return value (XCom) is ``{"outcome": "approved", "requested_by", "requested_at",
    "approved_by": {"id", "name"}, "approved_at", "plan_key", "plan_sha256", ...}`` or
    ``{"outcome": "rejected", "responded_by", ...}``; the same is pushed under the key
    :data:`~voipstudio_provider.tasks.purge.ANSWER_KEY` however the task ends.
    """

    def __init__(self, *, plan_task_id: str = "plan_purge", **kwargs: Any) -> None:
        if "defaults" in kwargs:
            raise ValueError("a purge approval has no default option: a timeout never approves")
        kwargs.setdefault("subject", "Approve the compliance purge?")
        super().__init__(fail_on_reject=False, **kwargs)
        self.plan_task_id = plan_task_id

    def execute(self, context: Context) -> Any:
        from voipstudio_provider.tasks import purge

        summary = context["ti"].xcom_pull(task_ids=self.plan_task_id)
        asked = purge.approval_request(context["params"], summary, context["dag_run"])
        self.subject = asked["subject"]
        self.body = asked["body"]
        self.assigned_users = asked["assigned_users"]
        self.response_timeout = asked["response_timeout"]
        self.log.info("approval asked: %s", self.subject)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        from voipstudio_provider.tasks import purge

        ti = context["ti"]
        if event.get("error_type") == "timeout":
            answer = purge.expired_answer(context["params"])
        else:
            self.validate_chosen_options(event["chosen_options"])
            summary = ti.xcom_pull(task_ids=self.plan_task_id)
            answer = purge.record_answer(context["params"], summary, context["dag_run"], event)
        # Pushed first: on Reject, the parent skips the deleting tasks by raising.
        ti.xcom_push(key=purge.ANSWER_KEY, value=answer)
        refused = purge.refused_line(answer)
        if refused:
            raise AirflowFailException(refused)
        super().execute_complete(context=context, event=event)
        return answer
