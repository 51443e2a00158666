"""The archive writer under S3 faults and overlapping runs, judged from the bucket.

Generated scenarios: one or two archive runs over recordings of sizes around the multipart
threshold, in a bucket with or without versioning. The second run may start from a stale
listing and may run in full at any moment of the first (just before one of its S3 writes).
Any S3 write of either run may fail before it reaches SeaweedFS, or after it took effect
with its answer lost; the faults come from a proxy around the real boto3 client, so every
request that is not failed is served by SeaweedFS.

Invariants, from listing the bucket (versions included) and reading the bytes back:

- an archive that verified after a writer call still does at the end: the object at its
  key has the same bytes, and (with versioning) the verified version is still there with
  those bytes; its sidecar still describes the same bytes;
- nothing partial is left: every version of every binary is the record's whole body, and
  no multipart upload under the prefix holds a part.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from botocore.exceptions import ClientError
from hypothesis import example, given, settings
from hypothesis import strategies as st
from voipstudio_provider.engine.archive.proof import ArchiveListing
from voipstudio_provider.engine.archive.writer import ArchiveTarget, archive_record, verify_archive
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, archive_key, sidecar_key
from voipstudio_provider.hooks.voipstudio import VoIPstudioHook

MONITORS = ARCHIVE_KINDS["monitors"]
MIB = 1024 * 1024
CHUNK = 5 * MIB
#: Around the multipart threshold: one PUT, one PUT just under, one part exactly, two parts.
SIZES = (64 * 1024, CHUNK - 1, CHUNK, CHUNK + 1)
#: The S3 calls by which the writer changes the bucket.
WRITES = (
    "put_object",
    "create_multipart_upload",
    "upload_part",
    "complete_multipart_upload",
    "copy_object",
    "delete_object",
    "abort_multipart_upload",
)
#: Where the second run may cut in: just before one of the first run's writes.
CUT_IN = (
    ("put_object", 1),
    ("put_object", 2),
    ("complete_multipart_upload", 1),
    ("copy_object", 1),
    ("delete_object", 1),
)
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
#: make test: a bounded number of scenarios; make fuzz: the fuzz profile's.
_BOUND = settings(max_examples=60) if _PROFILE == "ci" else settings()


class InjectedFault(ClientError):
    def __init__(self, operation: str, when: str) -> None:
        super().__init__(
            {"Error": {"Code": "InternalError", "Message": f"injected {when} the effect"}},
            operation,
        )


class FaultyS3:
    """A boto3 S3 client whose writes fail as told, the rest passed through.

    A fault is keyed ``(operation, record, occurrence)``: the occurrence counts the calls of
    that operation for that record (a part's is its part number), so the same scenario
    fails the same calls whatever the threads' timing. ``before``: the request is not sent;
    ``after``: it is sent and takes effect, and the answer is lost.

    :param cut_in: called once, just before the write with that key is made.
    """

    def __init__(
        self,
        client,
        faults: dict[tuple[str, int, int], str],
        cut_in: tuple[tuple[str, int, int], Callable[[], None]] | None = None,
    ) -> None:
        self._client = client
        self._faults = faults
        self._cut_in = cut_in
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self.record = 0  # the index of the record being archived
        self.failed: list[tuple[str, int, int, str]] = []

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if name not in WRITES:
            return attribute

        def call(**kwargs):
            with self._lock:
                if name == "upload_part":
                    occurrence = int(kwargs["PartNumber"])
                else:
                    occurrence = self._counts.get((name, self.record), 0) + 1
                    self._counts[(name, self.record)] = occurrence
            key = (name, self.record, occurrence)
            if self._cut_in is not None and self._cut_in[0] == key:
                run, self._cut_in = self._cut_in[1], None
                run()
            when = self._faults.get(key)
            if when == "before":
                self.failed.append((*key, when))
                raise InjectedFault(name, when)
            answer = attribute(**kwargs)
            if when == "after":
                self.failed.append((*key, when))
                raise InjectedFault(name, when)
            return answer

        return call


@dataclass
class Verified:
    """An archive seen verified after a writer call: what must stay."""

    key: str
    version: str | None
    digest: str
    checksum: str  # S3's ChecksumSHA256 of the bytes, checked after every writer call
    proof: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(sandbox_server, seaweed):
    """Recordings of every size at the source, their bodies' digests, two buckets."""
    sandbox_server.control("POST", "reset")
    records, digests = [], {}
    for size in SIZES:
        (new_id,) = sandbox_server.control(
            "POST", "records/monitors", {"count": 1, "fields": {"size": size}}
        )["ids"]
        records.append(new_id)
    rows = {m["id"]: m for m in sandbox_server.control("GET", "records/monitors")["data"]}
    monitors = [rows[i] for i in records]
    os.environ["AIRFLOW_CONN_VOIPSTUDIO_FAULTS"] = sandbox_server.airflow_conn_json()
    hook = VoIPstudioHook("voipstudio_faults", backoff_base=0.01, backoff_cap=0.05)
    for monitor in monitors:
        digests[monitor["id"]] = hook.download(
            MONITORS.operation, monitor["id"], io.BytesIO()
        ).sha256
    s3 = seaweed.client()
    buckets = {}
    for versioned in (False, True):
        name = f"faults-{'v' if versioned else 'u'}-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        buckets[versioned] = name
    yield {"hook": hook, "s3": s3, "monitors": monitors, "digests": digests, "buckets": buckets}
    hook.close()
    del os.environ["AIRFLOW_CONN_VOIPSTUDIO_FAULTS"]


faults = st.dictionaries(
    st.tuples(st.sampled_from(WRITES), st.integers(0, 1), st.integers(1, 2)),
    st.sampled_from(["before", "after"]),
    max_size=4,
)


@st.composite
def scenarios(draw):
    return {
        "versioned": draw(st.booleans()),
        "sizes": draw(
            st.lists(st.sampled_from(range(len(SIZES))), min_size=1, max_size=2, unique=True)
        ),  # fmt: skip
        "second_run": draw(st.booleans()),
        "stale": draw(st.booleans()),
        "cut_in": draw(st.none() | st.sampled_from(CUT_IN)),
        "first_faults": draw(faults),
        "second_faults": draw(faults),
    }


def digest_of(s3, bucket: str, key: str, version: str | None = None) -> str:
    extra = {"VersionId": version} if version else {}
    return hashlib.sha256(s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()).hexdigest()


def checksum_at(s3, bucket: str, key: str, version: str | None = None) -> str | None:
    """S3's ``ChecksumSHA256`` of the object (or version), ``None`` when it is gone."""
    extra = {"VersionId": version} if version else {}
    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED", **extra)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NoSuchVersion"):
            return None
        raise
    return head.get("ChecksumSHA256")


def proof_of(s3, bucket: str, key: str) -> dict:
    sidecar = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return {k: sidecar.get(k) for k in ("id", "sha256", "size", "checksum_sha256")}


def run_scenario(world, scenario) -> None:
    s3, hook = world["s3"], world["hook"]
    bucket = world["buckets"][scenario["versioned"]]
    target = ArchiveTarget(bucket=bucket, prefix=f"p-{uuid.uuid4().hex[:10]}", chunk_size=CHUNK)
    records = [world["monitors"][i] for i in scenario["sizes"]]
    verified: dict[str, Verified] = {}

    def note_verified(record: dict) -> None:
        """After each writer call: what verified before still stands; note what does now."""
        for seen in verified.values():
            current = checksum_at(s3, bucket, seen.key)
            assert current == seen.checksum, f"{seen.key} deleted or changed: {current}"
            if seen.version is not None:
                kept = checksum_at(s3, bucket, seen.key, seen.version)
                assert kept == seen.checksum, f"{seen.key} {seen.version} deleted or changed"
        if verify_archive(s3, MONITORS, record, target).ok:
            key = archive_key(target.prefix, MONITORS, record)
            head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            version = head.get("VersionId") if scenario["versioned"] else None
            verified.setdefault(
                f"{key}@{version}",
                Verified(
                    key,
                    version,
                    digest_of(s3, bucket, key),
                    head["ChecksumSHA256"],
                    proof_of(s3, bucket, sidecar_key(target.prefix, MONITORS, record)),
                ),
            )

    def archive_all(client: FaultyS3, listing: ArchiveListing) -> None:
        for index, record in enumerate(records):
            client.record = index
            archive_record(hook, client, MONITORS, record, target, listing=listing)
            note_verified(record)

    stale = ArchiveListing(s3, bucket)
    for record in records:
        stale.decide(MONITORS, target.prefix, record)  # listed before the first run wrote

    second = FaultyS3(s3, scenario["second_faults"])
    second_done = []

    def run_second() -> None:
        listing = stale if scenario["stale"] else ArchiveListing(s3, bucket)
        archive_all(second, listing)
        second_done.append(True)

    cut_in = None
    if scenario["second_run"] and scenario["cut_in"] is not None:
        operation, occurrence = scenario["cut_in"]
        cut_in = ((operation, 0, occurrence), run_second)
    first = FaultyS3(s3, scenario["first_faults"], cut_in)
    archive_all(first, ArchiveListing(s3, bucket))
    if scenario["second_run"] and not second_done:
        run_second()

    check_bucket(world, target, records, verified)


def check_bucket(world, target: ArchiveTarget, records, verified: dict[str, Verified]) -> None:
    s3, bucket = world["s3"], target.bucket
    for seen in verified.values():
        assert checksum_at(s3, bucket, seen.key) is not None, f"{seen.key} deleted"
        assert digest_of(s3, bucket, seen.key) == seen.digest, f"{seen.key} changed"
        if seen.version is not None:
            assert checksum_at(s3, bucket, seen.key, seen.version), f"{seen.version} deleted"
            assert digest_of(s3, bucket, seen.key, seen.version) == seen.digest, (
                f"{seen.key} version {seen.version} deleted or changed"
            )
    for record in records:
        key = archive_key(target.prefix, MONITORS, record)
        if any(seen.key == key for seen in verified.values()):
            assert verify_archive(s3, MONITORS, record, target).ok, f"{key} no longer verifies"
            side = sidecar_key(target.prefix, MONITORS, record)
            proofs = {json.dumps(s.proof) for s in verified.values() if s.key == key}
            assert json.dumps(proof_of(s3, bucket, side)) in proofs, f"{side} changed"
    # Nothing partial: every stored version of a binary (quarantined copies too) is its
    # record's whole body.
    expected = {str(r["id"]): world["digests"][r["id"]] for r in records}
    listing = s3.list_object_versions(Bucket=bucket, Prefix=f"{target.prefix}/")
    for version in listing.get("Versions", []):
        if version["Key"].endswith(".mp3"):
            record_id = version["Key"].rsplit("/", 1)[1].split(".")[0]
            version_id = version["VersionId"] if version["VersionId"] != "null" else None
            digest = digest_of(s3, bucket, version["Key"], version_id)
            assert digest == expected[record_id], f"{version['Key']} is not the whole body"
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=f"{target.prefix}/")
    for upload in uploads.get("Uploads", []):
        # An upload whose creation answer was lost has no id the writer knows of: it may
        # stay, empty, for the bucket's lifecycle rule; it must never hold a part.
        parts = s3.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        assert not parts.get("Parts"), f"parts of {upload['Key']} left in an upload"


def scenario(**changes) -> dict:
    """A scenario of one recording of one part, no second run and no faults, changed."""
    plain = {"versioned": False, "sizes": [2], "second_run": False, "stale": False,
             "cut_in": None, "first_faults": {}, "second_faults": {}}  # fmt: skip
    return {**plain, **changes}


@_BOUND
@given(scenario=scenarios())
# Found: a part fails and so does the first abort of the upload; the cleanup itself raised.
@example(
    scenario=scenario(
        first_faults={("upload_part", 0, 1): "before", ("abort_multipart_upload", 0, 1): "before"}
    )
)
# Found: the upload was created but its answer lost; the cleanup itself raised.
@example(scenario=scenario(first_faults={("create_multipart_upload", 0, 1): "after"}))
# The first run stores and verifies; the second, from a stale listing, fails its
# labelling copy and deleted the first run's recording.
@example(
    scenario=scenario(second_run=True, stale=True, second_faults={("copy_object", 0, 1): "before"})
)
@example(
    scenario=scenario(
        versioned=True,
        second_run=True,
        stale=True,
        second_faults={("copy_object", 0, 1): "after", ("delete_object", 0, 1): "before"},
    )
)
def test_the_archive_writer_never_destroys_a_verified_archive(world, scenario):
    run_scenario(world, scenario)
