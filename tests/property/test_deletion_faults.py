"""The deleter driven through generated faults, judged from the sandbox and the bucket.

Each scenario runs :class:`~voipstudio_provider.engine.deletion.deleter.SourceDeleter` with the real
hook against the sandbox (over HTTP, where its faults live) and SeaweedFS: API requests may
meet 429, 5xx or a dropped connection before the effect, 5xx or a drop after it, a slow
answer, a 202 or a 500 whose effect lands late; S3 calls on intents, audit parts, proofs
and sidecars may fail, before or after taking effect; the process may die at any step,
then be retried, or only the next day's run comes; another deleting run may overlap;
records appear and vanish during the walk; ids and numbers are held. After the retries,
the teardowns and the next run's settling, the invariants are checked from outside
(:class:`~tests.property.harness.Verdict`).

``make test`` runs :data:`CI_SCENARIOS` scenarios, the same ones every time; ``make fuzz``
runs random ones until ``FUZZ_MINUTES`` have passed and prints how many it tried.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from voipstudio_provider.endpoints import parse_api_datetime
from voipstudio_provider.engine.archive.writer import ArchiveTarget, archive_batch
from voipstudio_provider.engine.deletion.deleter import SourceDeleter
from voipstudio_provider.engine.evidence.intents import deletion_attempt, probe_bucket
from voipstudio_provider.engine.layout import ARCHIVE_KINDS, archive_key
from voipstudio_provider.engine.subjects.legal_hold import LegalHold
from voipstudio_provider.hooks.voipstudio import VoIPstudioHook
from voipstudio_provider.tasks.deletion_run import finish_audit, settle_earlier_runs

from tests.property.harness import Verdict, clear_audit, snapshot
from tests.property.inprocess import InProcessSandbox, Killed, StepHook, Steps, StepS3

#: Scenarios ``make test`` runs (at least 100); ``DELETION_SCENARIOS`` overrides it.
CI_SCENARIOS = int(os.environ.get("DELETION_SCENARIOS", "100"))
FUZZ_MINUTES = float(os.environ.get("FUZZ_MINUTES", "0"))
PREFIX = "fz"
RETENTION, PURGE = "voipstudio_retention", "voipstudio_compliance_purge"
BY_IDS, LISTING = "/v1.1/voipstudio/monitors/*", "/v1.1/voipstudio/monitors"
DELETE_KINDS = (
    "429", "500", "503", "slow", "drop", "apply_500", "apply_drop", "late", "late_500",
)  # fmt: skip
READ_KINDS = ("429", "500", "503", "slow", "drop")
#: Seconds the deleter waits for rows to vanish, and the teardowns for late deletes; every
#: generated late effect lands within the teardown's wait.
CONFIRM, SETTLE_WAIT, LATEST_EFFECT = 0.3, 0.6, 0.4
TRIED = {"scenarios": 0}


@pytest.fixture(scope="module")
def world(tmp_path_factory, seaweed):
    """The in-process sandbox, its monitors before the cutoff archived (all but two: one
    never archived, one whose archived copy was replaced by other bytes), a hook."""
    sandbox = InProcessSandbox(tmp_path_factory.mktemp("fuzz-sandbox")).start()
    conn = {"conn_type": "voipstudio", "host": sandbox.base_url, "password": "sandbox-token"}
    os.environ["AIRFLOW_CONN_VOIPSTUDIO_FUZZ"] = json.dumps(conn)
    hook = VoIPstudioHook(
        "voipstudio_fuzz", max_attempts=3, backoff_base=0.005, backoff_cap=0.02,
        retry_after_cap=0.02,
    )  # fmt: skip
    s3 = seaweed.client()
    bucket = f"fuzz-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    target = ArchiveTarget(bucket=bucket, prefix=PREFIX)
    monitors = sorted(
        sandbox.store.all("monitors"), key=lambda m: parse_api_datetime(m["timestamp"])
    )
    cutoff = parse_api_datetime(monitors[10]["timestamp"])
    candidates = [m for m in monitors if parse_api_datetime(m["timestamp"]) < cutoff]
    by_id = sorted(candidates, key=lambda m: m["id"])
    unarchived, corrupted = by_id[3]["id"], by_id[6]["id"]
    archived = [m for m in candidates if m["id"] != unarchived]
    outcomes = archive_batch(hook, s3, ARCHIVE_KINDS["monitors"], archived, target)
    assert {o.status for o in outcomes} == {"archived"}
    bad = next(m for m in candidates if m["id"] == corrupted)
    s3.put_object(
        Bucket=bucket, Key=archive_key(PREFIX, ARCHIVE_KINDS["monitors"], bad),
        Body=b"not the recording", ChecksumAlgorithm="SHA256",
    )  # fmt: skip
    numbers = _held_number_choices(candidates)
    yield World(
        sandbox, hook, s3, target, cutoff, [m["id"] for m in by_id], unarchived, corrupted,
        numbers, snapshot(s3, bucket, PREFIX),
    )  # fmt: skip
    hook.close()
    sandbox.stop()
    os.environ.pop("AIRFLOW_CONN_VOIPSTUDIO_FUZZ", None)


def _held_number_choices(candidates: list[dict]) -> list[str]:
    """Callers of candidates that parse as numbers (holding one holds its records)."""
    import phonenumbers

    found = []
    for record in candidates:
        try:
            number = phonenumbers.parse(str(record.get("caller") or ""), "GB")
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            found.append(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return sorted(set(found))


@dataclass(repr=False)
class World:
    """What every scenario starts from (short in a falsifying example's report)."""

    sandbox: InProcessSandbox
    hook: VoIPstudioHook
    s3: object
    target: ArchiveTarget
    cutoff: dt.datetime
    candidates: list[int]
    unarchived: int
    corrupted: int
    numbers: list[str]
    archive: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"World(candidates={self.candidates}, unarchived={self.unarchived}, "
            f"corrupted={self.corrupted}, numbers={self.numbers})"
        )


# -- scenarios ----------------------------------------------------------------------------


@st.composite
def http_rules(draw) -> list[dict]:
    rules = []
    for _ in range(draw(st.integers(0, 3))):
        on_delete = draw(st.booleans())
        rules.append(
            {
                "path": BY_IDS if on_delete else LISTING,
                "methods": ["DELETE" if on_delete else "GET"],
                "kind": draw(st.sampled_from(DELETE_KINDS if on_delete else READ_KINDS)),
                "rate": draw(st.sampled_from((0.25, 0.5, 1.0))),
                "times": draw(st.sampled_from((None, 1, 2, 4))),
                "delay": draw(st.sampled_from((0.02, 0.15, LATEST_EFFECT))),
                "retry_after": 0,
            }
        )
    return rules


steps = st.one_of(st.none(), st.integers(1, 90))

scenarios = st.fixed_dictionaries(
    {
        "rules": http_rules(),
        "fault_seed": st.integers(0, 2**16),
        "batch_size": st.integers(1, 4),
        "budget": st.integers(1, 12),
        "kill_at": steps,
        "kill_after_effect": st.booleans(),
        "s3_failures": st.frozensets(st.integers(1, 90), max_size=2),
        "s3_fail_after_effect": st.booleans(),
        "then": st.sampled_from(("retry", "next_day", "never")),
        "overlap_at": steps,
        "insert_at": steps,
        "remove_at": steps,
        "remove_index": st.integers(0, 9),
        "held": st.frozensets(st.integers(0, 9), max_size=2),
        "hold_number": st.integers(-1, 3),
    }
)


def attempt(world: World, hook, s3, dag_id: str, run_id: str, try_number: int, hold, scenario):
    """One deleting task attempt, as the retention task runs it."""
    target = world.target
    probe_bucket(s3, target, dag_id, run_id, f"monitors.try{try_number}")
    with deletion_attempt(hook, s3, target, dag_id, run_id, "monitors", try_number) as (
        audit,
        intents,
    ):
        SourceDeleter(
            hook, s3, target, audit, "monitors", hold=hold, dry_run=False,
            budget=scenario["budget"], batch_size=scenario["batch_size"],
            confirm_timeout=CONFIRM, cutoff=world.cutoff, intents=intents,
            hold_loader=lambda: hold,
            checkpoint=lambda: audit.upload(s3, target.bucket, audit.key),
        ).run(hook.iter_records("monitors", until=world.cutoff))  # fmt: skip


def quietly(action) -> str:
    """Run ``action``; a failure is an outcome of the scenario, not of the test."""
    try:
        action()
    except Killed:
        return "killed"
    except Exception as error:  # noqa: BLE001 - any failure of a run is allowed here
        return f"failed: {type(error).__name__}"
    return "done"


def run_scenario(world: World, scenario: dict) -> None:
    TRIED["scenarios"] += 1
    sandbox, hook, s3, target = world.sandbox, world.hook, world.s3, world.target
    sandbox.sandbox.reset()
    clear_audit(s3, target.bucket, PREFIX)
    held_ids = {world.candidates[i] for i in scenario["held"] if i < len(world.candidates)}
    numbers = world.numbers
    held_numbers = (
        frozenset({numbers[scenario["hold_number"] % len(numbers)]})
        if numbers and scenario["hold_number"] >= 0
        else frozenset()
    )
    hold = LegalHold(ids={"monitors": frozenset(held_ids)}, numbers=held_numbers)
    rows = {m["id"]: m for m in sandbox.store.all("monitors")}
    must_stay = {world.unarchived, world.corrupted} | held_ids
    must_stay |= {i for i in world.candidates if hold.reason("monitors", rows[i])}
    removed: set[int] = set()
    before = set(rows)

    def add_old_unarchived() -> None:
        template = dict(rows[world.candidates[0]])
        template["id"] = sandbox.store.next_id("monitors")
        sandbox.store.insert("monitors", [template])
        before.add(template["id"])
        must_stay.add(template["id"])

    def remove_elsewhere() -> None:
        victim = world.candidates[scenario["remove_index"] % len(world.candidates)]
        if victim in sandbox.ids("monitors"):
            sandbox.store.delete("monitors", [victim])
            removed.add(victim)

    purge_run = "manual__overlap"

    def overlapping_run() -> None:
        def run() -> None:
            settle_earlier_runs(
                hook, s3, target, PURGE, purge_run, grace=dt.timedelta(0), wait=SETTLE_WAIT
            )
            attempt(world, hook, s3, PURGE, purge_run, 1, hold, scenario)

        quietly(run)
        quietly(lambda: finish_audit(hook, s3, target, PURGE, purge_run, wait=SETTLE_WAIT))

    interlude = {}
    for at, action in (
        (scenario["overlap_at"], overlapping_run),
        (scenario["insert_at"], add_old_unarchived),
        (scenario["remove_at"], remove_elsewhere),
    ):
        if at is not None and at not in interlude:
            interlude[at] = action
    sandbox.sandbox.faults.replace({"seed": scenario["fault_seed"], "rules": scenario["rules"]})
    first = Steps(
        kill_at=scenario["kill_at"], kill_after_effect=scenario["kill_after_effect"],
        s3_failures=scenario["s3_failures"], s3_fail_after_effect=scenario["s3_fail_after_effect"],
        interlude=interlude,
    )  # fmt: skip
    run_a = "scheduled__2026-11-20T04:00:00+00:00"
    outcome = quietly(
        lambda: attempt(world, StepHook(hook, first), StepS3(s3, first), RETENTION, run_a, 1,
                        hold, scenario)
    )  # fmt: skip
    teardowns = [] if outcome == "killed" else [run_a]
    if outcome != "done" and scenario["then"] == "retry":
        quietly(lambda: attempt(world, hook, s3, RETENTION, run_a, 2, hold, scenario))
        teardowns = [run_a]
    elif outcome != "done" and scenario["then"] == "next_day":
        run_b = "scheduled__2026-11-21T04:00:00+00:00"

        def next_day() -> None:
            settle_earlier_runs(
                hook, s3, target, RETENTION, run_b, grace=dt.timedelta(0), wait=SETTLE_WAIT
            )
            attempt(world, hook, s3, RETENTION, run_b, 1, hold, scenario)

        quietly(next_day)
        teardowns.append(run_b)
    # The service recovers (what it queued still lands); the teardowns run.
    sandbox.sandbox.faults.replace({"rules": []})
    for run_id in teardowns:
        finish_audit(hook, s3, target, RETENTION, run_id, wait=SETTLE_WAIT)
    # The judging day's run settles whatever is left before it would delete.
    settle_earlier_runs(
        hook, s3, target, RETENTION, "scheduled__2026-11-30T04:00:00+00:00",
        grace=dt.timedelta(0), wait=SETTLE_WAIT,
    )  # fmt: skip
    sandbox.wait_for_late_effects()

    after = sandbox.ids("monitors")
    verdict = Verdict.read(s3, target.bucket, PREFIX, sandbox.sandbox.requests.as_list())
    event(f"first attempt {outcome.split(':')[0]}")
    event(f"{len(verdict.deleted_lines())} deleted lines")
    event(
        f"{sum(1 for x in verdict.lines if x.get('recovered_by'))} > 0 recovered lines"
        if any(x.get("recovered_by") for x in verdict.lines)
        else "no recovered line"
    )
    verdict.check("monitors", before, after, removed_elsewhere=removed, must_stay=must_stay)
    assert snapshot(s3, target.bucket, PREFIX) == world.archive, "an archived object changed"
    touched = [k for _, k in first.s3_keys_written if not k.startswith(f"{PREFIX}/audit/")]
    assert not touched, f"the deleter wrote or deleted archived objects: {touched}"


def run_checked(world: World, scenario: dict) -> None:
    run_scenario(world, scenario)


_QUICK = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)
_CI_PHASES = [Phase.explicit, Phase.reuse, Phase.generate]


@pytest.mark.skipif(FUZZ_MINUTES > 0, reason="make fuzz runs test_fuzz_for_the_time_budget")
@settings(max_examples=CI_SCENARIOS, phases=_CI_PHASES, **_QUICK)
@example(
    scenario={
        "rules": [{"path": LISTING, "methods": ["GET"], "kind": "500", "rate": 1.0,
                   "times": None, "delay": 0.02, "retry_after": 0}],
        "fault_seed": 0, "batch_size": 3, "budget": 12, "kill_at": None,
        "kill_after_effect": False, "s3_failures": frozenset(), "s3_fail_after_effect": False,
        "then": "never", "overlap_at": None, "insert_at": None, "remove_at": None,
        "remove_index": 0, "held": frozenset(), "hold_number": -1,
    }
)  # fmt: skip
# Found by make fuzz: an overlapping run settled the first run's intent while the first
# run still waited for its read-back; both wrote a deleted line.
@example(
    scenario={
        "rules": [], "fault_seed": 0, "batch_size": 2, "budget": 5, "kill_at": 38,
        "kill_after_effect": False, "s3_failures": frozenset(), "s3_fail_after_effect": False,
        "then": "retry", "overlap_at": 32, "insert_at": None, "remove_at": None,
        "remove_index": 0, "held": frozenset(), "hold_number": 0,
    }
)  # fmt: skip
# Found by make fuzz: a 429, then a retry answered 404 because an overlapping run had
# deleted the id; the first run took the 404 for its own lost answer.
@example(
    scenario={
        "rules": [{"path": BY_IDS, "methods": ["DELETE"], "kind": "429", "rate": 0.25,
                   "times": None, "delay": 0.02, "retry_after": 0}],
        "fault_seed": 2, "batch_size": 1, "budget": 2, "kill_at": None,
        "kill_after_effect": False, "s3_failures": frozenset(), "s3_fail_after_effect": False,
        "then": "retry", "overlap_at": 10, "insert_at": None, "remove_at": None,
        "remove_index": 0, "held": frozenset(), "hold_number": 0,
    }
)  # fmt: skip
# Found by make fuzz: a delete answered 202 and performed later, of an id an overlapping
# run had deleted meanwhile: the accepted request was taken for this run's deletion.
@example(
    scenario={
        "rules": [{"path": BY_IDS, "methods": ["DELETE"], "kind": "late", "rate": 0.25,
                   "times": None, "delay": 0.02, "retry_after": 0}],
        "fault_seed": 22, "batch_size": 1, "budget": 1, "kill_at": None,
        "kill_after_effect": False, "s3_failures": frozenset(), "s3_fail_after_effect": False,
        "then": "retry", "overlap_at": 10, "insert_at": None, "remove_at": None,
        "remove_index": 0, "held": frozenset(), "hold_number": 0,
    }
)  # fmt: skip
@given(scenario=scenarios)
def test_deleter_keeps_its_promises_under_generated_faults(world, scenario):
    run_checked(world, scenario)


@pytest.mark.skipif(FUZZ_MINUTES <= 0, reason="the long mode: make fuzz FUZZ_MINUTES=...")
def test_fuzz_for_the_time_budget(world, capsys):
    """Random scenarios until ``FUZZ_MINUTES`` have passed; prints how many were tried."""
    deadline = time.monotonic() + FUZZ_MINUTES * 60
    TRIED["scenarios"] = 0
    rounds = 0

    @settings(max_examples=50, derandomize=False, **_QUICK)
    @given(scenario=scenarios)
    def one_round(scenario):
        if time.monotonic() < deadline:
            run_checked(world, scenario)

    try:
        while time.monotonic() < deadline:
            one_round()
            rounds += 1
    finally:
        with capsys.disabled():
            print(
                f"\nfuzz: {TRIED['scenarios']} deletion scenarios tried in {rounds} rounds "
                f"({FUZZ_MINUTES:g} minutes)"
            )
