"""The manual keeps its promises: the IAM policies it prints, and the links into it.

The deployment page includes the policies of ``docs/iam/`` and says what each role can and
cannot do; these tests evaluate those very files against keys built by the provider's own
bucket layout, so a policy that drifts from its page fails here. The DAGs' docs and the
README link into the manual; a link to a page or heading that does not exist fails here
(links inside ``docs/`` are checked by ``mkdocs build --strict``).
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import re
from pathlib import Path

import markdown
import pytest
import yaml
from voipstudio_provider.engine import layout

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUCKET = "voipstudio-archive"
PREFIX = "voipstudio"
DAY = dt.date(2026, 11, 20)
RUN_ID = "scheduled__2026-11-19T04:00:00+00:00"

# --- a small evaluator of identity policies: explicit Deny, then Allow, else denied -------


def _matches(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    # IAM wildcards: `*` any run of characters (slashes included), `?` one character.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _applies(statement: dict, action: str, resource: str, context: dict[str, str]) -> bool:
    if "Action" in statement:
        actions = _as_list(statement["Action"])
        if not any(_matches(a, action, ignore_case=True) for a in actions):
            return False
    else:
        not_actions = _as_list(statement["NotAction"])
        if any(_matches(a, action, ignore_case=True) for a in not_actions):
            return False
    if "Resource" in statement:
        if not any(_matches(r, resource) for r in _as_list(statement["Resource"])):
            return False
    elif any(_matches(r, resource) for r in _as_list(statement["NotResource"])):
        return False
    for operator, conditions in statement.get("Condition", {}).items():
        if operator != "StringLike":
            raise AssertionError(f"condition operator {operator} is not evaluated here")
        for key, patterns in conditions.items():
            if key not in context:
                return False
            if not any(_matches(p, context[key]) for p in _as_list(patterns)):
                return False
    return True


def allowed(policy: dict, action: str, resource: str, **context: str) -> bool:
    """Whether ``policy`` alone allows ``action`` on ``resource``, as IAM decides it."""
    context = {k.replace("_", ":", 1): v for k, v in context.items()}
    statements = [s for s in policy["Statement"] if _applies(s, action, resource, context)]
    if any(s["Effect"] == "Deny" for s in statements):
        return False
    return any(s["Effect"] == "Allow" for s in statements)


def obj(key: str) -> str:
    return f"arn:aws:s3:::{BUCKET}/{key}"


BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"


def test_the_evaluator_lets_an_explicit_deny_win_and_reads_not_resource():
    policy = {
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": obj("p/*")},
            {"Effect": "Deny", "Action": "s3:DeleteObject", "NotResource": obj("p/tmp/*")},
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": BUCKET_ARN,
                "Condition": {"StringLike": {"s3:prefix": ["p/*"]}},
            },
        ]
    }
    assert allowed(policy, "s3:PutObject", obj("p/a/b.json"))
    assert allowed(policy, "S3:putobject", obj("p/a"))
    assert not allowed(policy, "s3:PutObject", obj("q/a"))
    assert not allowed(policy, "s3:DeleteObject", obj("p/a"))
    assert allowed(policy, "s3:DeleteObject", obj("p/tmp/a"))
    assert allowed(policy, "s3:ListBucket", BUCKET_ARN, s3_prefix="p/x/")
    assert not allowed(policy, "s3:ListBucket", BUCKET_ARN, s3_prefix="q/")
    assert not allowed(policy, "s3:ListBucket", BUCKET_ARN)


# --- the policies of docs/iam/ ----------------------------------------------------------


def _policy(name: str) -> dict:
    return json.loads((DOCS / "iam" / f"{name}.json").read_text())


ROLES = ["archive-role", "retention-role", "auditor-role", "legal-hold-role", "erasure-role"]


@pytest.fixture(scope="module")
def policies() -> dict[str, dict]:
    return {name: _policy(name) for name in ROLES}


@pytest.fixture(scope="module")
def archive_role(policies) -> dict:
    return policies["archive-role"]


@pytest.fixture(scope="module")
def retention_role(policies) -> dict:
    return policies["retention-role"]


@pytest.fixture(scope="module")
def auditor_role(policies) -> dict:
    return policies["auditor-role"]


@pytest.fixture(scope="module")
def legal_hold_role(policies) -> dict:
    return policies["legal-hold-role"]


@pytest.fixture(scope="module")
def erasure_role(policies) -> dict:
    return policies["erasure-role"]


MONITOR = {"id": 42, "timestamp": "2025-11-01 10:00:00"}
VOICEMAIL = {"id": 7, "origtime": "2025-11-01 10:00:00"}
CDR = {"id": 9, "calldate": "2025-11-01 10:00:00"}
MSDR = {"id": 9, "created_at": "2025-11-01 10:00:00"}
RECORDS = {"monitors": MONITOR, "voicemessages": VOICEMAIL, "cdrs": CDR, "msdrs": MSDR}


def record_copies() -> list[str]:
    """Each archive kind's binary, sidecar and quarantined copy, built by the layout."""
    keys = []
    for kind in layout.ARCHIVE_KINDS.values():
        record = RECORDS[kind.resource]
        key = layout.archive_key(PREFIX, kind, record)
        keys.append(key)
        if kind.sidecar:
            keys.append(layout.sidecar_key(PREFIX, kind, record))
        keys.append(layout.quarantine_key(PREFIX, key, dt.datetime(2026, 11, 20, tzinfo=dt.UTC)))
    return keys


def archive_written_keys() -> list[str]:
    """Every key the archive, export and reconciliation DAGs write, built by the layout."""
    keys = record_copies()
    keys += [
        layout.cdr_csv_key(PREFIX, 1002, DAY),
        layout.highwater_key(PREFIX, "monitors"),
        layout.ledger_key(PREFIX, DAY, "monitors-1-200-20261120T100000Z"),
        layout.report_key(PREFIX, DAY),
        layout.manifest_key(PREFIX, DAY),
        layout.manifest_key(PREFIX, DAY, 2, "jsonl"),
        layout.subjects_key(PREFIX, DAY, "monitors-1-200-20261120T100000Z"),
    ]
    return keys


def audit_keys() -> list[str]:
    """The finished evidence of the deleting DAGs: audit objects, plans, hold lines."""
    return [
        layout.audit_key(PREFIX, "voipstudio_retention", RUN_ID),
        layout.audit_key(PREFIX, "voipstudio_compliance_purge", RUN_ID),
        layout.plan_key(PREFIX, "voipstudio_compliance_purge", RUN_ID),
        f"{PREFIX}/audit/voipstudio_compliance_purge/{RUN_ID}.plan.csv",
        f"{PREFIX}/audit/legal-hold/{DAY.isoformat()}.jsonl",
    ]


def temporary_audit_keys() -> list[str]:
    run = f"{PREFIX}/audit/voipstudio_retention/{RUN_ID}"
    return [f"{run}.parts/monitors.try1.jsonl", f"{run}.intents/1.json", f"{run}.probe/x"]


def test_the_layout_yields_a_key_for_every_archive_folder():
    folders = {key.split("/")[1] for key in archive_written_keys()}
    assert folders == {
        "recordings",
        "voicemail",
        "pcaps",
        "quarantine",
        "cdr-csv",
        "highwater",
        "ledger",
        "reconciliation",
        "manifests",
        "subjects",
    }


def test_the_archive_role_writes_every_key_the_archive_dags_write(archive_role):
    for key in archive_written_keys():
        assert allowed(archive_role, "s3:PutObject", obj(key)), key
        assert allowed(archive_role, "s3:GetObject", obj(key)), key
        assert allowed(archive_role, "s3:AbortMultipartUpload", obj(key)), key
    assert allowed(archive_role, "s3:ListBucket", BUCKET_ARN, s3_prefix=f"{PREFIX}/recordings/")


@pytest.mark.parametrize(
    "action",
    ["s3:PutObject", "s3:PutObjectRetention", "s3:PutObjectLegalHold", "s3:DeleteObject"],
)
def test_the_archive_role_never_writes_or_deletes_the_audit(archive_role, action):
    for key in audit_keys() + temporary_audit_keys():
        assert not allowed(archive_role, action, obj(key)), key


def test_the_archive_role_reads_the_audit_for_the_reconciliation(archive_role):
    for key in audit_keys():
        assert allowed(archive_role, "s3:GetObject", obj(key)), key


def test_the_archive_role_deletes_nothing_and_writes_no_chats(archive_role):
    for key in archive_written_keys() + audit_keys() + [layout.chat_key(PREFIX, 7, DAY)]:
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
            assert not allowed(archive_role, action, obj(key)), (action, key)
    assert not allowed(archive_role, "s3:PutObject", obj(layout.chat_key(PREFIX, 7, DAY)))


def test_the_retention_role_writes_audit_plans_and_chats_but_no_archived_copies(retention_role):
    for key in audit_keys() + temporary_audit_keys() + [layout.chat_key(PREFIX, 7, DAY)]:
        assert allowed(retention_role, "s3:PutObject", obj(key)), key
    for key in archive_written_keys():
        assert allowed(retention_role, "s3:GetObject", obj(key)), key
        assert not allowed(retention_role, "s3:PutObject", obj(key)), key


def test_the_retention_role_deletes_only_the_temporary_parts_of_the_audit(retention_role):
    for key in temporary_audit_keys():
        assert allowed(retention_role, "s3:DeleteObject", obj(key)), key
    kept = archive_written_keys() + audit_keys() + [layout.chat_key(PREFIX, 7, DAY)]
    for key in kept:
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
            assert not allowed(retention_role, action, obj(key)), (action, key)
    for key in temporary_audit_keys() + kept:
        assert not allowed(retention_role, "s3:BypassGovernanceRetention", obj(key)), key


def test_the_auditor_role_reads_and_lists_only(auditor_role):
    every_key = archive_written_keys() + audit_keys() + [layout.chat_key(PREFIX, 7, DAY)]
    for key in every_key:
        assert allowed(auditor_role, "s3:GetObject", obj(key)), key
        for action in ("s3:PutObject", "s3:DeleteObject", "s3:PutObjectRetention"):
            assert not allowed(auditor_role, action, obj(key)), (action, key)
    assert allowed(auditor_role, "s3:ListBucket", BUCKET_ARN, s3_prefix=f"{PREFIX}/manifests/")


def archived_copies() -> list[str]:
    """The archived objects of records: what an erasure removes and a legal hold locks."""
    return record_copies() + [layout.chat_key(PREFIX, 7, DAY)]


def evidence_keys() -> list[str]:
    """What no role may delete: finished audit objects, ledgers, manifests and reports."""
    return audit_keys() + [
        layout.erasure_audit_key(PREFIX, RUN_ID),
        layout.ledger_key(PREFIX, DAY, "monitors-1-200-20261120T100000Z"),
        layout.manifest_key(PREFIX, DAY),
        layout.manifest_key(PREFIX, DAY, 2, "jsonl"),
        layout.report_key(PREFIX, DAY),
    ]


def test_the_legal_hold_role_sets_and_lifts_holds_and_deletes_nothing(legal_hold_role):
    for key in archived_copies():
        for action in ("s3:PutObjectLegalHold", "s3:GetObjectLegalHold", "s3:GetObjectVersion"):
            assert allowed(legal_hold_role, action, obj(key)), (action, key)
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObject"):
            assert not allowed(legal_hold_role, action, obj(key)), (action, key)
        assert not allowed(legal_hold_role, "s3:BypassGovernanceRetention", obj(key)), key
    hold_audit = layout.legal_hold_audit_key(PREFIX, RUN_ID)
    assert allowed(legal_hold_role, "s3:PutObject", obj(hold_audit))
    for key in evidence_keys():
        assert not allowed(legal_hold_role, "s3:DeleteObject", obj(key)), key
    assert allowed(legal_hold_role, "s3:ListBucketVersions", BUCKET_ARN, s3_prefix=f"{PREFIX}/")


def test_the_erasure_role_erases_copies_but_never_evidence_holds_or_locks(erasure_role):
    for key in archived_copies():
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
            assert allowed(erasure_role, action, obj(key)), (action, key)
        for action in ("s3:PutObjectLegalHold", "s3:BypassGovernanceRetention", "s3:PutObject"):
            assert not allowed(erasure_role, action, obj(key)), (action, key)
    for key in evidence_keys():
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion"):
            assert not allowed(erasure_role, action, obj(key)), (action, key)
    writes = [
        layout.erasure_audit_key(PREFIX, RUN_ID),
        layout.erasure_pending_key(PREFIX, RUN_ID),
        layout.manifest_key(PREFIX, DAY, 2, "jsonl"),
        layout.subjects_key(PREFIX, DAY, "monitors-1-200-20261120T100000Z"),
    ]
    for key in writes:
        assert allowed(erasure_role, "s3:PutObject", obj(key)), key
    assert not allowed(erasure_role, "s3:PutObject", obj(audit_keys()[0]))


def test_the_archive_and_retention_roles_cannot_touch_legal_holds(archive_role, retention_role):
    for policy in (archive_role, retention_role):
        for key in archived_copies():
            assert not allowed(policy, "s3:PutObjectLegalHold", obj(key)), key


@pytest.mark.parametrize("name", ROLES)
def test_no_role_reaches_outside_the_prefix(name):
    policy = _policy(name)
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert not allowed(policy, action, obj("other/recordings/1.mp3"))
        assert not allowed(policy, action, f"arn:aws:s3:::other-bucket/{PREFIX}/x")
    assert not allowed(policy, "s3:ListBucket", BUCKET_ARN, s3_prefix="other/")


def test_the_deployment_page_shows_every_policy_file():
    page = (DOCS / "deployment.md").read_text()
    for path in sorted((DOCS / "iam").glob("*.json")):
        assert f'--8<-- "iam/{path.name}"' in page, path.name


# --- links into the manual --------------------------------------------------------------


def _anchors(page: Path) -> set[str]:
    md = markdown.Markdown(extensions=["toc", "attr_list", "pymdownx.superfences"])
    md.convert(page.read_text())

    def walk(tokens):
        for token in tokens:
            yield token["id"]
            yield from walk(token["children"])

    return set(walk(md.toc_tokens))


def _page_and_anchor(relative: str) -> tuple[Path, str]:
    path, _, anchor = relative.partition("#")
    return DOCS / path, anchor


def _site_url() -> str:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())["site_url"]


def _dag_docs() -> dict[str, str]:
    docs = {}
    for path in sorted((ROOT / "dags").glob("voipstudio_*.py")):
        docs[path.stem] = ast.get_docstring(ast.parse(path.read_text())) or ""
    return docs


@pytest.mark.parametrize("dag_file", sorted(_dag_docs()))
def test_each_dag_doc_links_to_its_page_of_the_manual(dag_file):
    site = _site_url()
    links = re.findall(rf"\]\(({re.escape(site)}[^)\s]*)\)", _dag_docs()[dag_file])
    assert links, f"dags/{dag_file}.py: its doc_md has no link into the manual at {site}"
    for link in links:
        address = link[len(site) :]
        path, _, anchor = address.partition("#")
        page = DOCS / (path.rstrip("/") + ".md" if path else "index.md")
        assert page.is_file(), f"{link}: no page {page.relative_to(ROOT)}"
        if anchor:
            assert anchor in _anchors(page), f"{link}: no heading #{anchor} in {page.name}"


def test_the_readme_links_only_to_pages_and_headings_that_exist():
    readme = (ROOT / "README.md").read_text()
    links = [
        target
        for target in re.findall(r"\]\(([^)\s]+)\)", readme)
        if not re.match(r"[a-z]+:", target)
    ]
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else ROOT / "README.md"
        assert target.exists(), f"README links to {link}: no {path}"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"README links to {link}: no such heading"


def test_the_anchor_reader_finds_headings_and_ignores_comments_in_code():
    anchors = _anchors(DOCS / "deletion.md")
    assert "phone-numbers" in anchors
    assert "no-such-heading" not in anchors
    # operating.md has a shell comment "# the run's state and note" inside a code block
    assert not any(a.startswith("the-runs-state") for a in _anchors(DOCS / "operating.md"))
