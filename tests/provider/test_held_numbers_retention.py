"""Retention against the sandbox and SeaweedFS keeps voicemail naming a held number in any
notation under another default region, and deletes voicemail whose numbers carry an
extension like any other."""

from __future__ import annotations

import pytest
from voipstudio_provider.engine.archive.writer import ArchiveTarget, archive_batch
from voipstudio_provider.engine.evidence.audit import audit_part, read_audit
from voipstudio_provider.engine.layout import ARCHIVE_KINDS
from voipstudio_provider.engine.subjects.legal_hold import parse_legal_hold
from voipstudio_provider.tasks.retention import SourceDeleter

DAG, RUN, PREFIX = "voipstudio_retention", "manual__2026-12-01T00:00:00+00:00", "vs"
#: The held number +44 20 7946 0321 as a caller id may show it, read under region US.
HELD_CALLER_IDS = (
    "Ann <442079460321>",
    "44 20 7946 0321",
    "02079460321",
    "442079460321,442079460322",
)
#: Caller ids of other numbers.
FREE_CALLER_IDS = ("Bob <12125550100>", "+44 20 7946 0322")
#: The same with extensions, which must neither release a hold nor stop the run.
WITH_EXTENSIONS = (("+44 20 7946 0321 ext. 12",), ("+1 212 555 0100 ext. 5", "+44 20 7946 0322 x7"))


def add_voicemail(sandbox, callerid: str) -> int:
    fields = {"caller": "anonymous", "dialled": "100", "callerid": callerid}
    body = {"count": 1, "fields": fields}
    return sandbox.control("POST", "records/voicemessages", body)["ids"][0]


@pytest.mark.parametrize(
    ("held_caller_ids", "free_caller_ids"),
    [(HELD_CALLER_IDS, FREE_CALLER_IDS), WITH_EXTENSIONS],
    ids=["notations", "extensions"],
)
def test_retention_keeps_a_held_number_in_any_notation_under_region_us(
    hook, sandbox, truth, seaweed, s3_bucket, held_caller_ids, free_caller_ids
):
    s3 = seaweed.client()
    held = {add_voicemail(sandbox, callerid): callerid for callerid in held_caller_ids}
    free = {add_voicemail(sandbox, callerid): callerid for callerid in free_caller_ids}
    records = [v for v in truth("voicemessages") if v["id"] in held.keys() | free.keys()]
    target = ArchiveTarget(bucket=s3_bucket, prefix=PREFIX)
    outcomes = archive_batch(hook, s3, ARCHIVE_KINDS["voicemessages"], records, target)
    assert {o.status for o in outcomes} == {"archived"}

    # voipstudio_default_region=US: the held number's own country (GB) is read too.
    hold = parse_legal_hold({"numbers": ["+44 20 7946 0321"]}, region="US")
    with audit_part(s3, s3_bucket, PREFIX, DAG, RUN, "voicemessages.try1") as audit:
        deleter = SourceDeleter(
            hook, s3, target, audit, "voicemessages", hold=hold, dry_run=False, budget=100,
            require_archive=True,
        )  # fmt: skip
        deleter.run(records)
        audit.upload(s3, s3_bucket, audit.key)
        lines = {line["id"]: line for line in read_audit(s3, s3_bucket, audit.key)}

    at_source = {v["id"] for v in truth("voicemessages")}
    assert held.keys() <= at_source, "a voicemail naming the held number was deleted"
    assert not free.keys() & at_source, "voicemail of other numbers was kept"
    for record_id in held:
        assert (lines[record_id]["action"], lines[record_id]["reason"]) == (
            "skipped",
            "legal_hold_number",
        ), held[record_id]
    for record_id in free:
        assert (lines[record_id]["action"], lines[record_id]["reason"]) == (
            "deleted",
            "archive_verified",
        ), free[record_id]
