"""Bodies into S3 as they arrive: one checked PUT for a small body, parallel parts for a large.

:class:`StreamingUpload` is the file object a download writes into. It holds at most one
part of the body; each full part goes up as soon as it is complete, with its own SHA-256,
while the next part is being downloaded. Parts in flight are bounded by a
:class:`UploadPool` shared by the streams of a batch, so memory stays within
``streams x part_size x 2``. A body that ends before the first part is full is stored in
one PUT carrying the body's ``ChecksumSHA256``. Either way the answer of the last request
(``PutObject``, or the ``CopyObject`` that labels a multipart object) says what S3 stored;
no HEAD follows.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import IO, TYPE_CHECKING, Any

from s3transfer.utils import ChunksizeAdjuster

from voipstudio_provider.engine.archive.proof import checksum_of, composite_checksum
from voipstudio_provider.engine.archive.stored import abort_upload, remove_own_version
from voipstudio_provider.exceptions import VoIPstudioIncompleteDownloadError

if TYPE_CHECKING:
    from voipstudio_provider.engine.archive.targets import ArchiveTarget

#: A record downloaded again is reported where the rest of its archiving is.
_archive_log = logging.getLogger("voipstudio_provider.engine.archive.writer")
#: The largest object one ``CopyObject`` copies: a larger multipart object keeps its
#: ``sha256`` in its sidecar only.
MAX_COPY_SIZE = 5 * 1024**3


class UploadPool:
    """Threads that upload parts, and the bound on parts held in memory.

    :param streams: the batch's parallel streams; as many parts may be in flight at once
        (each stream also fills one part of its own).
    """

    def __init__(self, streams: int) -> None:
        self.slots = threading.BoundedSemaphore(max(1, streams))
        self.executor = ThreadPoolExecutor(max_workers=max(1, streams), thread_name_prefix="part")

    def close(self) -> None:
        self.executor.shutdown(wait=True)

    def __enter__(self) -> UploadPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamingUpload(io.RawIOBase):
    """A write-only file object that uploads what is written to ``key``.

    Not seekable: a download into it that breaks cannot be rewound. The caller then calls
    :meth:`abort` (no part stays stored) and starts again with a new upload.

    :param s3_client: a boto3 S3 client.
    :param bucket: the bucket.
    :param key: the object's key.
    :param args: ``PutObject``/``CreateMultipartUpload`` arguments (type, metadata, SSE,
        class, lock, tags).
    :param part_size: bytes per part; a body shorter than this goes up in one PUT.
    :param pool: where parts are uploaded.
    :param size: the body's announced size; a multipart body of at most
        :data:`MAX_COPY_SIZE` is labelled with its digest once complete (:meth:`finish`),
        unless it is Object-Locked: the copy that labels it would leave a second locked
        version of the whole body for the lock's years, so its sidecar alone has the digest.
    """

    def __init__(
        self,
        s3_client,
        bucket: str,
        key: str,
        args: dict[str, Any],
        part_size: int,
        pool: UploadPool,
        size: int | None = None,
    ) -> None:
        super().__init__()
        self.s3_client = s3_client
        self.bucket = bucket
        self.key = key
        self.args = args
        self.part_size = part_size
        self.pool = pool
        self.chunks: list[bytes] = []  # the part being filled, joined once when it is full
        self.buffered = 0
        self.upload_id: str | None = None
        self.parts: list[Future] = []
        self.written = 0
        locked = "ObjectLockMode" in args
        self.label = size is not None and size <= MAX_COPY_SIZE and not locked

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, chunk) -> int:
        written = len(chunk)
        self.written += written
        view = memoryview(chunk)
        while self.buffered + len(view) >= self.part_size:
            room = self.part_size - self.buffered
            self.chunks.append(bytes(view[:room]))
            view = view[room:]
            self._send_part(self._take())
        if len(view):
            # A whole chunk of bytes is kept as it is; a slice or a buffer is copied once.
            self.chunks.append(
                chunk if len(view) == written and type(chunk) is bytes else bytes(view)
            )
            self.buffered += len(view)
        return written

    def _take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks, self.buffered = [], 0
        return data

    def _send_part(self, data: bytes) -> None:
        if self.upload_id is None:
            answer = self.s3_client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ChecksumAlgorithm="SHA256", **self.args
            )
            self.upload_id = answer["UploadId"]
        failed = next((p for p in self.parts if p.done() and p.exception()), None)
        if failed is not None:
            raise failed.exception()
        self.pool.slots.acquire()  # waits while the batch has as many parts in flight
        number = len(self.parts) + 1
        future = self.pool.executor.submit(self._upload_part, number, data)
        future.add_done_callback(lambda _: self.pool.slots.release())
        self.parts.append(future)

    def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).digest()
        answer = self.s3_client.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=data,
            ChecksumSHA256=base64.b64encode(digest).decode(),
        )
        return {"PartNumber": number, "ETag": answer["ETag"], "digest": digest}

    def finish(self, sha256: str) -> dict[str, Any]:
        """Store what was written; ``sha256`` (hex) is the whole body's, from the download.

        One PUT carries ``sha256`` and ``size`` metadata. A multipart object's metadata is
        set before its first byte is known: once complete it is labelled (:meth:`_label`).

        :return: ``checksum`` (the ``ChecksumSHA256`` computed here, which S3 must report),
            ``part_size`` (``None`` for one PUT), and S3's ``answer``.
        """
        if self.upload_id is None:
            checksum = checksum_of(sha256)
            # S3 refuses (BadDigest) a body that does not match ChecksumSHA256: the answer
            # is the proof that the stored bytes are these.
            body = self._take()
            metadata = {**self.args.get("Metadata", {}), "sha256": sha256, "size": str(len(body))}
            answer = self.s3_client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=body,
                ChecksumSHA256=checksum,
                **{**self.args, "Metadata": metadata},
            )
            return {"checksum": checksum, "part_size": None, "answer": answer}
        if self.buffered:
            self._send_part(self._take())
        parts = [future.result() for future in self.parts]
        checksum = composite_checksum(p["digest"] for p in parts)
        answer = self.s3_client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={
                "Parts": [
                    {
                        "PartNumber": p["PartNumber"],
                        "ETag": p["ETag"],
                        "ChecksumSHA256": base64.b64encode(p["digest"]).decode(),
                    }
                    for p in parts
                ]
            },
        )
        self.upload_id = None  # complete: nothing is left to abort
        if self.label:
            return self._label(sha256, checksum, answer)
        return {"checksum": checksum, "part_size": self.part_size, "answer": answer}

    def _label(self, sha256: str, checksum: str, completed: dict[str, Any]) -> dict[str, Any]:
        """Copy the completed object onto itself with its ``sha256`` and ``size`` metadata.

        S3 copies the bytes server-side and computes the copy's SHA-256 checksum: AWS
        reports a full-object one (the body's own SHA-256), SeaweedFS keeps the composite.
        Either proves the bytes; the one reported is what the sidecar records. The composite
        of the completed upload is checked first (a part list that is not the body).

        Only versions this call created are ever deleted, by their version ids: the
        unlabelled version once its labelled copy is current, and both if the copy is not
        the body. When the copy fails, the completed version is deleted, which makes what
        was current before it (another run's archive, perhaps) current again. In a bucket
        without versioning nothing is deleted: the completed object replaced whatever was
        at the key and is the whole body (its parts were checked), while a delete of the
        key could destroy another run's verified archive written meanwhile.
        """
        version = completed.get("VersionId")
        reported = completed.get("ChecksumSHA256")
        args = {k: v for k, v in self.args.items() if k != "Metadata"}
        if "Tagging" in args:
            args["TaggingDirective"] = "REPLACE"
        metadata = {**self.args.get("Metadata", {}), "sha256": sha256, "size": str(self.written)}
        # The copy is of the object just completed, named by its ETag rather than its
        # version id: copying a version would need s3:GetObjectVersion as well.
        if completed.get("ETag"):
            args["CopySourceIfMatch"] = completed["ETag"]
        try:
            if reported and reported != checksum:
                raise RuntimeError(f"S3 checksum {reported} != {checksum} of the downloaded body")
            copied = self.s3_client.copy_object(
                Bucket=self.bucket,
                Key=self.key,
                CopySource={"Bucket": self.bucket, "Key": self.key},
                MetadataDirective="REPLACE",
                Metadata=metadata,
                ChecksumAlgorithm="SHA256",
                **args,
            )
        except BaseException as error:
            self._remove(version, f"the labelling copy failed: {type(error).__name__}")
            raise
        copy = copied.get("VersionId")
        result = copied.get("CopyObjectResult", {})
        stored = result.get("ChecksumSHA256") or reported
        if stored and stored not in (checksum, checksum_of(sha256)):
            problem = f"S3 checksum {stored} of the copy is not the body's"
            self._remove(copy, problem)
            if copy is not None:
                self._remove(version, problem)
            raise RuntimeError(problem)
        if version and copy and copy != version:
            self._remove(version, "replaced by its labelled copy")
        answer = {"ETag": result.get("ETag"), "ChecksumSHA256": stored, "VersionId": copy}
        return {"checksum": stored or checksum, "part_size": self.part_size, "answer": answer}

    def _remove(self, version: str | None, why: str) -> None:
        """Delete one version of the key that this upload created (see
        :func:`~voipstudio_provider.engine.archive.stored.remove_own_version`)."""
        remove_own_version(self.s3_client, self.bucket, self.key, version, why)

    def abort(self) -> None:
        """Drop what was sent: wait for the parts in flight, then abort the upload."""
        self._take()
        for future in self.parts:
            future.cancel()
        for future in self.parts:
            if not future.cancelled():
                future.exception()  # wait; its error is the reason we abort, or moot
        if self.upload_id is not None:
            abort_upload(self.s3_client, self.bucket, self.key, self.upload_id)
            self.upload_id = None
        self.parts = []


def part_size_for(target: ArchiveTarget, size: int) -> int | None:
    """The part size of a multipart upload of ``size`` bytes, ``None`` for one PUT. It is
    what boto3 will use (raised for bodies that would need over 10,000 parts)."""
    if size < target.chunk_size:
        return None
    return ChunksizeAdjuster().adjust_chunksize(target.chunk_size, size)


def spool_checksum(spool: IO[bytes], sha256: str, part_size: int | None) -> str:
    """The ``ChecksumSHA256`` S3 will report for the spooled body once uploaded."""
    if part_size is None:
        return checksum_of(sha256)
    spool.seek(0)
    parts = [hashlib.sha256(c).digest() for c in iter(lambda: spool.read(part_size), b"")]
    return composite_checksum(parts)


def upload_spooled(
    s3_client, spool: IO[bytes], key: str, args: dict, target: ArchiveTarget, part_size: int | None
) -> dict[str, Any]:
    """Store the spooled body at ``key``: one PUT, or parts of ``part_size`` bytes.

    Every request carries its bytes' SHA-256 (S3 refuses bytes that do not match). A failed
    multipart upload is aborted by its own upload id before the error is raised, so no part
    of it stays; nothing else is touched.

    :param args: ``PutObject``/``CreateMultipartUpload`` arguments, ``Metadata`` with the
        body's ``sha256`` among them.
    :return: S3's answer to the last request (``PutObject`` or ``CompleteMultipartUpload``).
    """
    spool.seek(0)
    args = {k: v for k, v in args.items() if k != "ChecksumAlgorithm"}
    if part_size is None:
        digest = bytes.fromhex(args["Metadata"]["sha256"])
        return s3_client.put_object(
            Bucket=target.bucket,
            Key=key,
            Body=spool.read(),
            ChecksumSHA256=base64.b64encode(digest).decode(),
            **args,
        )
    upload_id = s3_client.create_multipart_upload(
        Bucket=target.bucket, Key=key, ChecksumAlgorithm="SHA256", **args
    )["UploadId"]
    try:
        parts = []
        for number, data in enumerate(iter(lambda: spool.read(part_size), b""), start=1):
            checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
            answer = s3_client.upload_part(
                Bucket=target.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ChecksumSHA256=checksum,
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum})
        return s3_client.complete_multipart_upload(
            Bucket=target.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        abort_upload(s3_client, target.bucket, key, upload_id)
        raise


def stream_to_s3(
    voip_hook, s3_client, kind, record, target, key, pool, downloads=None
) -> dict[str, Any]:
    """Download ``record``'s body straight into S3 (one PUT, or parts as they arrive).

    A body that breaks cannot be rewound: the upload is aborted (no part stays) and the
    record is downloaded again from the start, as often as the hook tries a request.
    ``downloads`` (a semaphore) is held while the body downloads only: the PUT of a small
    body and the completion of a multipart upload happen while another record downloads.
    """
    attempts = max(1, int(getattr(voip_hook, "max_attempts", 3)))
    for attempt in range(1, attempts + 1):
        upload = StreamingUpload(
            s3_client,
            target.bucket,
            key,
            {"ContentType": kind.content_type, **target.object_args()},
            part_size_for(target, record.get("size") or target.chunk_size) or target.chunk_size,
            pool,
            record.get("size"),
        )
        try:
            with downloads or nullcontext():
                result = voip_hook.download(
                    kind.operation,
                    int(record["id"]),
                    upload,
                    expected_size=record.get("size"),
                    max_size=target.max_size,
                )
            stored = upload.finish(result.sha256)
        except VoIPstudioIncompleteDownloadError as error:
            upload.abort()
            if not error.retryable or attempt == attempts:
                raise
            _archive_log.info("%s %s: %s; downloading again", kind.name, record["id"], error)
            continue
        except BaseException:
            upload.abort()
            raise
        return {"result": result, **stored}
    raise AssertionError("unreachable")
