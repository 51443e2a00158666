"""Archive VoIPstudio recordings, voicemail, PCAPs and traces to S3."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from voipstudio_provider.engine.archive.targets import FAILED, ArchiveOutcome, ArchiveTarget
from voipstudio_provider.engine.archive.writer import archive_and_summarize
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, ArchiveKind
from voipstudio_provider.engine.summaries import push_summary

if TYPE_CHECKING:
    from airflow.sdk import Context

    from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

#: Failed records named in the task's error; the full list is in the summary.
_FAILED_SHOWN = 20


class VoIPstudioToS3Operator(BaseOperator):
    """Archive the binaries of VoIPstudio records to S3, streaming, verified, resumable.

    Records already complete in the bucket (see
    :func:`~voipstudio_provider.engine.archive.proof.verify_archive`) are skipped without a
    download.
    Every other body is streamed into S3 while it is hashed (one checked PUT, or parts
    uploaded as they arrive), then described in its sidecar; at most ``max_streams``
    transfers run at a time. A failed record does not stop the
    others: the task fails at the end, naming the failed ids.

    :param kind: what to archive: ``monitors``, ``voicemessages``, ``cdr_pcaps``,
        ``msdr_pcaps``, ``cdr_traces`` or ``msdr_traces``.
    :param records: the API records (e.g. the output of a list task), or give
        ``record_ids``.
    :param record_ids: ids of records to fetch first, then archive.
    :param bucket: the S3 bucket.
    :param prefix: the key prefix of the bucket layout.
    :param sse: server-side encryption, ``AES256`` or ``aws:kms``.
    :param kms_key_id: the KMS key for ``aws:kms``.
    :param storage_class: the S3 storage class, e.g. ``STANDARD_IA`` or ``GLACIER_IR``.
    :param object_lock_mode: ``GOVERNANCE`` or ``COMPLIANCE`` (bucket with Object Lock).
    :param object_lock_days: days each object stays locked.
    :param tags: object tags.
    :param max_streams: transfers running at a time.
    :param chunk_size: bytes kept in memory per transfer and the multipart part size.
    :param max_size: the most bytes one download may bring; a longer body fails its record
        as soon as it passes this (no limit by default besides the record's ``size`` and
        ``Content-Length``).
    :param voipstudio_conn_id: the ``voipstudio`` connection.
    :param aws_conn_id: the Amazon connection (``endpoint_url`` in its extra for an
        S3-compatible server).
    :return: ``{"kind", "archived", "skipped", "failed", "bytes", "failed_ids"}``.
    """

    template_fields: Sequence[str] = (
        "kind", "records", "record_ids", "bucket", "prefix", "sse", "kms_key_id",
        "storage_class", "object_lock_mode", "object_lock_days", "tags", "max_streams",
        "chunk_size", "max_size", "voipstudio_conn_id", "aws_conn_id",
    )  # fmt: skip
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        kind: str,
        bucket: str,
        records: list[dict] | None = None,
        record_ids: list[int] | None = None,
        prefix: str = "voipstudio",
        sse: str | None = None,
        kms_key_id: str | None = None,
        storage_class: str | None = None,
        object_lock_mode: str | None = None,
        object_lock_days: int | None = None,
        tags: dict[str, str] | None = None,
        max_streams: int = 4,
        chunk_size: int = 8 * 1024 * 1024,
        max_size: int | None = None,
        voipstudio_conn_id: str = "voipstudio_default",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (records is None) == (record_ids is None):
            raise ValueError("give either records or record_ids")
        self.kind = kind
        self.records = records
        self.record_ids = record_ids
        self.bucket = bucket
        self.prefix = prefix
        self.sse = sse
        self.kms_key_id = kms_key_id
        self.storage_class = storage_class
        self.object_lock_mode = object_lock_mode
        self.object_lock_days = object_lock_days
        self.tags = tags
        self.max_streams = max_streams
        self.chunk_size = chunk_size
        self.max_size = max_size
        self.voipstudio_conn_id = voipstudio_conn_id
        self.aws_conn_id = aws_conn_id

    @cached_property
    def voipstudio_hook(self) -> VoIPstudioHook:
        from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

        return VoIPstudioHook(voipstudio_conn_id=self.voipstudio_conn_id)

    @cached_property
    def s3_client(self):
        """One boto3 S3 client, shared by the streams (boto3 clients are thread-safe), with
        a connection for each stream and each part in flight."""
        from voipstudio_provider.engine.archive.targets import s3_client_for

        return s3_client_for(self.aws_conn_id, int(self.max_streams))

    def target(self) -> ArchiveTarget:
        """Where and how this task writes, from its (rendered) arguments."""
        days = self.object_lock_days
        return ArchiveTarget(
            bucket=self.bucket,
            prefix=str(self.prefix).strip("/"),
            sse=self.sse or None,
            kms_key_id=self.kms_key_id or None,
            storage_class=self.storage_class or None,
            object_lock_mode=self.object_lock_mode or None,
            object_lock_days=None if days in (None, "") else int(days),
            tags=self.tags or None,
            chunk_size=int(self.chunk_size),
            max_size=None if self.max_size in (None, "") else int(self.max_size),
        )

    def _fetch(self, kind: ArchiveKind) -> tuple[list[dict], list[ArchiveOutcome]]:
        """GET each record of ``record_ids``; a record that cannot be read is a failure."""
        records, failures = [], []
        for record_id in self.record_ids or []:
            try:
                records.append(self.voipstudio_hook.get_record(kind.resource, int(record_id)))
            except Exception as error:
                message = f"get: {type(error).__name__}: {error}"
                self.log.warning("%s %s: %s", kind.name, record_id, message)
                failures.append(
                    ArchiveOutcome(kind.name, int(record_id), FAILED, "", error=message)
                )
        return records, failures

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            kind = ARCHIVE_KINDS[self.kind]
        except KeyError:
            raise ValueError(
                f"unknown kind {self.kind!r}; one of {sorted(ARCHIVE_KINDS)}"
            ) from None
        target = self.target()
        if self.record_ids is not None:
            records, outcomes = self._fetch(kind)
        else:
            records, outcomes = list(self.records or []), []
        done = archive_and_summarize(
            self.voipstudio_hook,
            self.s3_client,
            kind,
            records,
            target,
            max_streams=int(self.max_streams),
            earlier=outcomes,
            logger=self.log,
        )
        outcomes, failed = done.outcomes, done.failures
        summary = {"kind": kind.name, **done.counts}
        self.log.info(
            "%s to s3://%s/%s: %d archived (%d bytes), %d already there, %d failed",
            kind.name, target.bucket, target.prefix, summary["archived"], summary["bytes"],
            summary["skipped"], summary["failed"],
        )  # fmt: skip
        if failed:
            ti = context.get("ti") if context else None
            if ti is not None:  # the counts stay readable although the task fails
                push_summary(ti, summary)
            shown = ", ".join(str(o.record_id) for o in failed[:_FAILED_SHOWN])
            more = f" and {len(failed) - _FAILED_SHOWN} more" if len(failed) > _FAILED_SHOWN else ""
            raise AirflowException(
                f"{len(failed)} of {len(outcomes)} {kind.name} failed to archive: ids "
                f"{shown}{more}; first error: {failed[0].error}"
            )
        return summary
