"""What the demo did, read back from the bucket, the audit logs and the DAG runs' logs."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

#: The bucket's folders a user looks in, in the order the report lists them.
FOLDERS = (
    ("recordings", "call recordings (MP3 + JSON sidecar)"),
    ("voicemail", "voicemail (MP3 + JSON sidecar)"),
    ("pcaps/cdrs", "call PCAPs"),
    ("pcaps/msdrs", "media-server PCAPs"),
    ("cdr-csv", "CDR CSV exports"),
    ("chats", "chats archived before their messages were deleted"),
    ("audit", "audit logs and purge plans"),
)
_SUMMARY_LINES = re.compile(
    r"(archive of s3://.*?failed"
    r"|^\s+(?:monitors|voicemessages|cdr_pcaps|msdr_pcaps|cdr_traces|msdr_traces): .*"
    r"|CDR CSV export of .*?bytes[^\[]*)",
    re.MULTILINE,
)
_LOG_SUFFIX = re.compile(r"\s*\[[\w.]+\]\s+loc=\S+$")


def _objects(s3_client, bucket: str, prefix: str) -> list[dict]:
    paginator = s3_client.get_paginator("list_objects_v2")
    found: list[dict] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        found.extend(page.get("Contents", []))
    return found


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size / 1000:.1f} kB"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def bucket_lines(s3_client, bucket: str, prefix: str) -> list[str]:
    """One line per folder: how many files of which type, how many bytes."""
    lines = []
    for folder, meaning in FOLDERS:
        objects = _objects(s3_client, bucket, f"{prefix}/{folder}/")
        if not objects:
            lines.append(f"  {prefix}/{folder}/: nothing ({meaning})")
            continue
        by_type = Counter(o["Key"].rsplit(".", 1)[-1] for o in objects)
        size = sum(o["Size"] for o in objects)
        days = {part for o in objects for part in o["Key"].split("/") if part.startswith("date=")}
        types = ", ".join(f"{n} .{ext}" for ext, n in sorted(by_type.items()))
        span = f" over {_plural(len(days), 'day')}" if days else ""
        lines.append(f"  {prefix}/{folder}/: {types}, {_megabytes(size)}{span} ({meaning})")
    return lines


def csv_lines(s3_client, bucket: str, prefix: str) -> list[str]:
    """Each exported CSV with its row count (header-only files say so)."""
    lines = []
    for obj in _objects(s3_client, bucket, f"{prefix}/cdr-csv/"):
        rows = s3_client.head_object(Bucket=bucket, Key=obj["Key"])["Metadata"].get("rows", "?")
        note = " (header only: a listed user without calls that day)" if rows == "0" else ""
        count = _plural(int(rows), "row") if rows.isdigit() else f"{rows} rows"
        lines.append(f"    {obj['Key']}: {count}{note}")
    return lines


def run_summary_lines(log_text: str) -> list[str]:
    """The summary a DAG run logged (archive totals, export totals), without log prefixes."""
    lines = (_LOG_SUFFIX.sub("", m.group(0)).strip() for m in _SUMMARY_LINES.finditer(log_text))
    return ["    " + line for line in lines]


def audit_lines(s3_client, bucket: str, prefix: str, dag_id: str) -> list[str]:
    """Per run of ``dag_id``: how many items were deleted or kept, per resource and reason."""
    lines = []
    for obj in _objects(s3_client, bucket, f"{prefix}/audit/{dag_id}/"):
        key = obj["Key"]
        if not key.endswith(".jsonl") or ".parts/" in key:
            continue
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        entries = [json.loads(line) for line in body.splitlines() if line.strip()]
        lines.append(f"    {key}: {len(entries)} lines")
        lines.extend(_audit_counts(entries))
    return lines or [f"    no audit log under {prefix}/audit/{dag_id}/"]


def _audit_counts(entries: Iterable[dict]) -> list[str]:
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    examples: dict[tuple[str, str, str], str] = {}
    for entry in entries:
        group = (entry.get("action", "?"), entry.get("resource", "?"))
        reason = entry.get("reason", "?")
        counts[group][reason] += 1
        examples.setdefault((*group, reason), entry.get("archive_key") or "")
    lines = []
    for (action, resource), reasons in sorted(counts.items()):
        for reason, n in sorted(reasons.items()):
            checked = examples[(action, resource, reason)]
            where = f", e.g. checked against {checked}" if checked else ""
            lines.append(f"      {action} {n} {resource}: {reason}{where}")
    return lines


def approval_lines(s3_client, bucket: str, prefix: str, dag_id: str) -> list[str]:
    """Per approved plan of ``dag_id``: who asked, who approved, when, and which plan."""
    lines = []
    for obj in _objects(s3_client, bucket, f"{prefix}/audit/{dag_id}/"):
        if not obj["Key"].endswith(".plan.approved.json"):
            continue
        plan = json.loads(s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
        approval = plan["approval"]
        planned = ", ".join(f"{e['count']} {r}" for r, e in plan["resources"].items())
        lines += [
            f"    asked by {approval['requested_by']} at {approval['requested_at']}",
            f"    approved by {approval['approved_by']['name']} at {approval['approved_at']}",
            f"    the plan approved: {planned} (sha256 {approval['plan_sha256'][:16]}...)",
            f"    {obj['Key']}",
        ]
    return lines or [f"    no approved plan under {prefix}/audit/{dag_id}/"]


def note_lines(log_text: str) -> list[str]:
    """The run's note, as its ``set_run_note`` task logged it."""
    notes = re.findall(r"run note(?: not set)? \([^)]*\): (.*?)(?:\s+\[[\w.]+\]|$)", log_text,
                       re.MULTILINE)  # fmt: skip
    return [f"    note: {note.strip()}" for note in notes[-1:]]
