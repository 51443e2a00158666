"""Where the DAGs write: bucket, prefix and S3 options, resolved in one place.

A DAG param of a run wins, else the Airflow Variable, else the default:
``bucket`` / ``voipstudio_s3_bucket`` / ``voipstudio-archive`` and
``prefix`` / ``voipstudio_s3_prefix`` / ``voipstudio``. The DAGs that delete at the source
pass no params (:func:`deletion_target`): for them the Variables decide alone.

The Variables of the deleting DAGs (retention policy, legal hold, default region, purge
approvers) and the two clients every task builds from its connections are read here too.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

DEFAULT_BUCKET = "voipstudio-archive"
DEFAULT_PREFIX = "voipstudio"
BUCKET_VARIABLE = "voipstudio_s3_bucket"
PREFIX_VARIABLE = "voipstudio_s3_prefix"
#: Variable holding the default S3 write options, JSON such as
#: ``{"sse": "aws:kms", "kms_key_id": "...", "storage_class": "GLACIER_IR"}``.
S3_OPTIONS_VARIABLE = "voipstudio_s3_options"
S3_OPTION_NAMES = ("sse", "kms_key_id", "storage_class", "object_lock_mode", "object_lock_days")

EXPORT_USERS_VARIABLE = "voipstudio_export_user_ids"
POLICY_VARIABLE = "voipstudio_retention_policy"
HOLD_VARIABLE = "voipstudio_legal_hold"
#: Variable of the duty to keep that an erasure of archived copies respects: JSON of days
#: per resource, e.g. ``{"monitors": 2555}`` (MiFID II's seven years of call recordings).
KEEP_DAYS_VARIABLE = "voipstudio_minimum_keep_days"

VOIPSTUDIO_CONN_ID = "voipstudio_default"
AWS_CONN_ID = "aws_default"
#: The only connection allowed to delete archived copies (the erasure role); it never
#: falls back to ``aws_default``.
ERASURE_CONN_ID = "aws_erasure"
#: The connection that sets and lifts S3 legal holds on archived copies and writes their
#: audit (the legal-hold role); the archive's connection only reads for it.
LEGAL_HOLD_CONN_ID = "aws_legal_hold"
API_POOL = "voipstudio_api"


def dag_default_args(retry_minutes: int = 2) -> dict[str, Any]:
    """The ``default_args`` every VoIPstudio DAG shares: owner and backed-off retries."""
    return {
        "owner": "voipstudio",
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=retry_minutes),
        "retry_exponential_backoff": True,
    }


def _variable(name: str, default: Any = None) -> Any:
    from airflow.sdk import Variable

    # An unreadable Variable must fail the task: falling back to the default bucket would
    # archive to, or check copies in, the wrong place.
    return Variable.get(name, default=default)


def _given(value: Any) -> bool:
    return value is not None and value != ""


def resolve_bucket_and_prefix(params: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """The bucket and prefix a run writes to.

    :param params: the run's DAG params; ``bucket`` and ``prefix`` override the Variables
        ``voipstudio_s3_bucket`` and ``voipstudio_s3_prefix`` when set and non-empty.
    :return: ``(bucket, prefix)``; the prefix has no leading or trailing slash.
    """
    params = params or {}
    bucket = params.get("bucket")
    if not _given(bucket):
        bucket = _variable(BUCKET_VARIABLE, DEFAULT_BUCKET) or DEFAULT_BUCKET
    prefix = params.get("prefix")
    if not _given(prefix):
        prefix = _variable(PREFIX_VARIABLE, DEFAULT_PREFIX) or DEFAULT_PREFIX
    prefix = str(prefix).strip("/")
    if not prefix:
        raise ValueError("the S3 prefix must not be empty")
    return str(bucket), prefix


def resolve_s3_options(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The S3 write options of a run: params first, then the ``voipstudio_s3_options`` Variable.

    :param params: the run's DAG params (``sse``, ``kms_key_id``, ``storage_class``,
        ``object_lock_mode``, ``object_lock_days``).
    :return: only the options that are set, as keyword arguments of
        :class:`~voipstudio_provider.engine.archive.targets.ArchiveTarget`.
    """
    params = params or {}
    raw = _variable(S3_OPTIONS_VARIABLE, None)
    defaults = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw or {})
    unknown = set(defaults) - set(S3_OPTION_NAMES)
    if unknown:
        raise ValueError(f"{S3_OPTIONS_VARIABLE} has unknown options: {sorted(unknown)}")
    options: dict[str, Any] = {}
    for name in S3_OPTION_NAMES:
        value = params.get(name)
        if not _given(value):
            value = defaults.get(name)
        if _given(value):
            options[name] = int(value) if name == "object_lock_days" else value
    return options


def archive_target(params: Mapping[str, Any] | None, chunk_size: int | None = None):
    """The :class:`~voipstudio_provider.engine.archive.targets.ArchiveTarget` of a run, from
    its params
    (bucket and prefix as :func:`resolve_bucket_and_prefix`, S3 options as
    :func:`resolve_s3_options`)."""
    from voipstudio_provider.engine.archive.targets import ArchiveTarget

    bucket, prefix = resolve_bucket_and_prefix(params)
    options = resolve_s3_options(params)
    if chunk_size:
        options["chunk_size"] = int(chunk_size)
    return ArchiveTarget(bucket=bucket, prefix=prefix, **options)


def deletion_target():
    """The archive a deleting DAG checks copies in, from the Variables only.

    ``voipstudio_s3_bucket``, ``voipstudio_s3_prefix`` and ``voipstudio_s3_options``: a run
    of a deleting DAG can never point the archive check elsewhere.
    """
    return archive_target(None)


def load_retention_policy() -> Any:
    """The Variable ``voipstudio_retention_policy`` as stored, ``None`` when it is not set
    (:mod:`~voipstudio_provider.engine.deletion.retention` reads it)."""
    return _variable(POLICY_VARIABLE)


def load_default_region() -> str | None:
    """The region national numbers are read in, from ``voipstudio_default_region``."""
    from voipstudio_provider.engine.subjects.phone_numbers import REGION_VARIABLE, parse_region

    return parse_region(_variable(REGION_VARIABLE))


def load_legal_hold():
    """The :class:`~voipstudio_provider.engine.subjects.legal_hold.LegalHold` from its Variable, its
    national numbers read in the default region; a hold that cannot be read, or a number in
    it that is not one valid number, stops the run."""
    from voipstudio_provider.engine.subjects.legal_hold import parse_legal_hold

    return parse_legal_hold(_variable(HOLD_VARIABLE), region=load_default_region())


def load_minimum_keep_days() -> dict[str, int]:
    """Days each resource's archived copies must be kept from the record's own date, from
    ``voipstudio_minimum_keep_days`` (nothing when it is not set); an entry that does not
    parse stops the run."""
    from voipstudio_provider.engine.deletion.erasure import parse_minimum_keep_days

    return parse_minimum_keep_days(_variable(KEEP_DAYS_VARIABLE))


def erasure_client():
    """A boto3 S3 client of the erasure role's connection ``aws_erasure``.

    :raises ConfigurationError: the connection is not defined; the archive's own
        connection is never used instead.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    check_connections(ERASURE_CONN_ID)
    return S3Hook(aws_conn_id=ERASURE_CONN_ID).get_conn()


def legal_hold_client():
    """A boto3 S3 client of the legal-hold role's connection ``aws_legal_hold``.

    :raises ConfigurationError: the connection is not defined (never replaced by another).
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    check_connections(LEGAL_HOLD_CONN_ID)
    return S3Hook(aws_conn_id=LEGAL_HOLD_CONN_ID).get_conn()


def load_purge_approvers():
    """Who may approve a purge, from ``voipstudio_purge_approvers``
    (:func:`~voipstudio_provider.engine.deletion.approval.parse_approvers`); unset: no list, and the
    person who asked may never approve."""
    from voipstudio_provider.engine.deletion.approval import APPROVERS_VARIABLE, parse_approvers

    return parse_approvers(_variable(APPROVERS_VARIABLE))


def clients(voipstudio_conn_id: str, aws_conn_id: str):
    """A VoIPstudio hook and a boto3 S3 client from the two Airflow connections."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

    return VoIPstudioHook(voipstudio_conn_id=voipstudio_conn_id), S3Hook(aws_conn_id).get_conn()


class ConfigurationError(ValueError):
    """A param, Variable or connection is wrong: retrying cannot help, the run must be fixed."""


@contextmanager
def fail_on_configuration_error(what: str):
    """Turn a configuration or input error raised inside into a failure without retries.

    A bad param, an unreadable Variable or a missing connection fails the task at once
    (``AirflowFailException``) with one line naming ``what`` was being read and the cause;
    errors of the API or of S3 pass through and keep their retries.
    """
    from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

    try:
        yield
    except (ValueError, TypeError, KeyError, AirflowNotFoundException) as exc:
        from voipstudio_provider.exceptions import VoIPstudioError

        if isinstance(exc, VoIPstudioError):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AirflowFailException(f"fix the {what}: {reason}") from exc


def check_connections(*conn_ids: str) -> None:
    """Fail at once, naming the connection, when one of ``conn_ids`` is not defined."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    for conn_id in conn_ids:
        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            raise ConfigurationError(f"connection {conn_id!r} is not defined") from None


def run_interval(context: Mapping[str, Any] | None = None) -> tuple[dt.datetime, dt.datetime]:
    """The data interval a task's run covers, also for a run without a logical date.

    A run created without a logical date (the REST API and the UI allow it) has no data
    interval; it covers the last complete interval of the DAG's timetable before the run's
    ``run_after``, as a manual run with a logical date of ``run_after`` would.

    :param context: the task's context (default: the current one).
    :return: ``(start, end)`` as aware UTC datetimes.
    """
    if context is None:
        from airflow.sdk import get_current_context

        context = get_current_context()
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None:
        return start, end
    import pendulum
    from airflow.serialization.encoders import coerce_to_core_timetable

    run_after = pendulum.instance(context["dag_run"].run_after).in_timezone("UTC")
    timetable = coerce_to_core_timetable(context["dag"].timetable)
    interval = timetable.infer_manual_data_interval(run_after=run_after)
    return interval.start, interval.end


def listed_user_ids(raw: Any) -> list[int]:
    """The ids of the ``voipstudio_export_user_ids`` Variable (a JSON list), validated."""
    if raw is None or raw == "":
        return []
    values = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(values, list):
        raise ValueError(f"{EXPORT_USERS_VARIABLE} must be a JSON list of user ids")
    return sorted({int(v) for v in values})


def load_export_user_ids() -> list[int]:
    """The users the export writes a CSV for even without calls, from
    ``voipstudio_export_user_ids`` (:func:`listed_user_ids`)."""
    return listed_user_ids(_variable(EXPORT_USERS_VARIABLE))
