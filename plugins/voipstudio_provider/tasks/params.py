"""The DAGs' run forms: every param more than one DAG offers, declared once, in named groups.

A DAG file asks :func:`dag_params` for the groups its form shows, in the form's order, and
adds the params only it has: ``params=dag_params("location", "batches", "s3_options")``.
So every DAG that offers ``bucket`` or an S3 option offers the same field, with the same
schema, title and description. The groups:

- ``location``: ``bucket`` and ``prefix``, overriding the Variables for one run
  (:func:`~voipstudio_provider.tasks.settings.resolve_bucket_and_prefix`);
- ``batches``: how an archive run looks back and cuts its window into mapped batches;
- ``traces``: the PCAP archive's ``include_traces``, which its form shows between the
  batches and the S3 options;
- ``s3_options``: the S3 write options, one param per
  :data:`~voipstudio_provider.tasks.settings.S3_OPTION_NAMES`; unset ones come from the
  Variable ``voipstudio_s3_options``
  (:func:`~voipstudio_provider.tasks.settings.resolve_s3_options`).

The deleting DAGs take no group: their bucket and prefix come from the Variables only.
"""

from __future__ import annotations

from collections.abc import Callable

from airflow.sdk import Param

from voipstudio_provider.tasks.settings import (
    BUCKET_VARIABLE,
    PREFIX_VARIABLE,
    S3_OPTIONS_VARIABLE,
)


def _location() -> dict[str, Param]:
    return {
        name: Param(
            None,
            type=["null", "string"],
            title=name.capitalize(),
            description=f"default: Variable {variable}",
        )
        for name, variable in (("bucket", BUCKET_VARIABLE), ("prefix", PREFIX_VARIABLE))
    }


def _batches() -> dict[str, Param]:
    return {
        "lookback_hours": Param(
            6,
            type="number",
            minimum=0,
            title="Look-back (hours)",
            description="also look at records this many hours before the run's interval",
        ),
        "batch_size": Param(
            200,
            type="integer",
            minimum=1,
            title="Batch size",
            description="records per mapped task (raised so a run maps at most 500 batches)",
        ),
        "max_streams": Param(
            4,
            type="integer",
            minimum=1,
            maximum=32,
            title="Parallel streams",
            description="downloads at a time inside one batch",
        ),
    }


def _traces() -> dict[str, Param]:
    return {
        "include_traces": Param(
            False,
            type="boolean",
            title="Include SIP traces",
            description="also archive each call's .trace (the SIP messages as text)",
        ),
    }


def _s3_options() -> dict[str, Param]:
    nullable = ["null", "string"]
    from_variable = f"default: Variable {S3_OPTIONS_VARIABLE}"
    return {
        "sse": Param(
            None,
            type=nullable,
            enum=[None, "AES256", "aws:kms"],
            values_display={None: "(from the Variable)", "AES256": "SSE-S3", "aws:kms": "SSE-KMS"},
            title="Server-side encryption",
            description=from_variable,
        ),
        "kms_key_id": Param(
            None, type=nullable, title="KMS key id", description=f"for SSE-KMS; {from_variable}"
        ),
        "storage_class": Param(
            None,
            type=nullable,
            title="Storage class",
            description=f"e.g. STANDARD_IA, GLACIER_IR; {from_variable}",
        ),
        "object_lock_mode": Param(
            None,
            type=nullable,
            enum=[None, "GOVERNANCE", "COMPLIANCE"],
            values_display={None: "(from the Variable)"},
            title="Object Lock mode",
            description=f"the bucket must have Object Lock enabled; {from_variable}",
        ),
        "object_lock_days": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Object Lock days",
            description=f"retain-until = upload time + days; {from_variable}",
        ),
    }


#: Every group a DAG may ask for, by name.
PARAM_GROUPS: dict[str, Callable[[], dict[str, Param]]] = {
    "location": _location,
    "batches": _batches,
    "traces": _traces,
    "s3_options": _s3_options,
}


def dag_params(*groups: str, **own: Param) -> dict[str, Param]:
    """A DAG's ``params``: the named groups in the order given, then the DAG's own params.

    Each call builds new :class:`~airflow.sdk.Param` objects, so no two DAGs share one.

    :param groups: names of :data:`PARAM_GROUPS`, e.g. ``"location", "s3_options"``.
    :param own: the params only this DAG has, in the order its form shows them.
    :return: the params by name, in the form's order.
    :raises ValueError: for a group name that does not exist, or a param named twice (a
        group given twice, or an own param with a group's param name).
    """
    unknown = [name for name in groups if name not in PARAM_GROUPS]
    if unknown:
        raise ValueError(f"unknown param groups {unknown}; known: {sorted(PARAM_GROUPS)}")
    params: dict[str, Param] = {}
    for part in [*(PARAM_GROUPS[name]() for name in groups), own]:
        twice = sorted(params.keys() & part.keys())
        if twice:
            raise ValueError(f"params named twice: {twice}")
        params.update(part)
    return params
