"""Records as the real service sends them: more fields than the reference, integer
enumerations, absent optional fields. Sidecars keep every field, and nothing fails on them."""

from __future__ import annotations

import json
import uuid

import pytest
from voipstudio_provider.engine.archive.writer import ArchiveTarget, archive_record
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, sidecar_key
from voipstudio_sandbox.generate import EXTRA_FIELDS

MONITORS = ARCHIVE_KINDS["monitors"]


@pytest.fixture
def target(bucket) -> ArchiveTarget:
    return ArchiveTarget(bucket=bucket, prefix=f"fields-{uuid.uuid4().hex[:8]}")


def _sidecar(s3, target: ArchiveTarget, record: dict) -> dict:
    key = sidecar_key(target.prefix, MONITORS, record)
    return json.loads(s3.get_object(Bucket=target.bucket, Key=key)["Body"].read())


def test_a_monitor_sidecar_is_the_record_as_sent_with_its_extra_fields(hook, s3, target):
    monitor = next(iter(hook.iter_records("monitors")))
    assert set(EXTRA_FIELDS["monitors"]) <= set(monitor)

    outcome = archive_record(hook, s3, MONITORS, monitor, target)

    assert outcome.status == "archived", outcome.error
    sidecar = _sidecar(s3, target, monitor)
    ours = ("sha256", "archived_at", "checksum_sha256", "part_size")
    assert {k: v for k, v in sidecar.items() if k not in ours} == monitor
    assert sidecar["sha256"] == outcome.sha256


def test_a_monitor_with_integer_enumerations_is_archived_as_sent(sandbox, hook, s3, target):
    sandbox.control("PUT", "settings", {"enums": "mixed"})  # both encodings in one walk
    walked = list(hook.iter_records("monitors"))
    coded = [m for m in walked if isinstance(m["type"], int)]
    assert coded, "the seeded share of integer enumerations holds no monitor"
    assert any(isinstance(m["type"], str) for m in walked)

    outcome = archive_record(hook, s3, MONITORS, coded[0], target)

    assert outcome.status == "archived", outcome.error
    assert _sidecar(s3, target, coded[0])["type"] == coded[0]["type"]


def test_unknown_fields_are_kept_and_absent_optional_fields_are_not_needed(hook, s3, target):
    monitor = dict(next(iter(hook.iter_records("monitors"))))
    for optional in ("summary", "transcript", "sentiment", "labels", "dst_name"):
        monitor.pop(optional)
    monitor["a_field_of_next_year"] = {"nested": [1, 2]}

    outcome = archive_record(hook, s3, MONITORS, monitor, target)

    assert outcome.status == "archived", outcome.error
    sidecar = _sidecar(s3, target, monitor)
    assert sidecar["a_field_of_next_year"] == {"nested": [1, 2]}
    assert "summary" not in sidecar
    assert archive_record(hook, s3, MONITORS, monitor, target).status == "skipped"  # verified
