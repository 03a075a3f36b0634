"""The retraining policy: what a refresh left is worth a training run only when it changed something that matters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.config import Retraining
from core.results import TrainingRun
from tasks.common.events import RETRAINING_DUE, RETRAINING_NOT_DUE, VERSION_REGISTERED
from tasks.finetune.retraining import retraining_due

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
TEST = "t" * 64


def trained(pairs: int | None, test: str | None = TEST, days_ago: int = 1, completed: bool = True) -> TrainingRun:
    return TrainingRun(fingerprint="f" * 64, base="models/base", completed=completed, train_pairs=pairs,
                       test_fingerprint=test, finished_at=(NOW - timedelta(days=days_ago)).isoformat())


@pytest.mark.parametrize(("policy", "pairs", "test", "last", "due", "reason"), [
    (Retraining(), 612, TEST, trained(200), True, "412 new training pairs ≥ 200"),
    (Retraining(), 217, TEST, trained(200), False, "17 new training pairs < 200"),
    (Retraining(), 200, TEST, trained(200), False, "0 new training pairs < 200"),
    (Retraining(), 217, "u" * 64, trained(200), True, "the test questions changed"),
    (Retraining(on_test_change=False), 217, "u" * 64, trained(200), False, "17 new training pairs < 200"),
    (Retraining(max_days=7), 217, TEST, trained(200, days_ago=9), True,
     "17 new training pairs and the last run is 9 days old ≥ 7"),
    (Retraining(max_days=7), 200, TEST, trained(200, days_ago=90), False, "0 new training pairs < 200"),
    (Retraining(), 150, TEST, None, True, "no finished training run yet"),
    (Retraining(), 150, TEST, trained(100, completed=False), True, "no finished training run yet"),
    (Retraining(), 0, TEST, None, False, "no training pairs yet"),
    (Retraining(), 250, TEST, trained(None, test=None), True, "250 new training pairs ≥ 200"),  # an older run.json
])
def test_the_decision_and_its_reason(policy, pairs, test, last, due, reason):
    decision = retraining_due(policy, pairs, test, last, NOW)
    assert (decision.due, decision.reason) == (due, reason)


@given(pairs=st.integers(0, 10_000), minimum=st.integers(1, 1000), days=st.integers(0, 400),
       max_days=st.none() | st.integers(1, 365), on_test_change=st.booleans())
def test_a_refresh_that_changed_nothing_is_never_worth_a_training_run(pairs, minimum, days, max_days, on_test_change):
    policy = Retraining(min_new_train_pairs=minimum, max_days=max_days, on_test_change=on_test_change)
    decision = retraining_due(policy, pairs, TEST, trained(pairs, days_ago=days), NOW)
    assert not decision.due and decision.new_train_pairs == 0


@given(before=st.integers(0, 5000), added=st.integers(0, 5000), minimum=st.integers(1, 1000))
def test_enough_new_pairs_are_always_due_and_fewer_never_are_by_count(before, added, minimum):
    decision = retraining_due(Retraining(min_new_train_pairs=minimum), before + added, TEST, trained(before), NOW)
    assert decision.new_train_pairs == added and decision.due == (added >= minimum)


@pytest.mark.e2e
def test_prefect_yaml_triggers_start_the_retrain_and_then_the_rollout_on_the_pipelines_events(prefect_server, tmp_path):
    """The loop's wiring on a real Prefect server: `prefect deploy` makes the automations from prefect.yaml's
    `triggers:`; the events are sent by our own code from a process of its own, as the flow runs send them. A
    refresh whose data is not worth retraining starts nothing; one that is starts `retrain` with the refresh's config
    path (templated from the event: Prefect #19501 once left it out); a registration starts `rollout` the same way.
    No worker runs here: the flow runs the automations create are the subject (the stages themselves are tested
    elsewhere), and are deleted after."""
    import subprocess
    import sys
    import time

    import httpx

    from harness.project import REPO, write_profile

    env = prefect_server.env
    config = str(write_profile(tmp_path, {}))

    def prefect(*args: str) -> None:
        result = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, f"prefect {' '.join(args)}: {result.stdout[-2000:]} {result.stderr[-2000:]}"

    def send(event: str, payload: str) -> None:
        code = ("import sys; from pathlib import Path; from core.config import load_config; "
                "from tasks.common.events import announce; "
                f"announce(load_config(Path(sys.argv[1])), {event!r}, sys.argv[1], {payload})")
        subprocess.run([sys.executable, "-c", code, config], cwd=REPO, check=True, timeout=120, env=env)

    def runs_of(deployment: str) -> list[dict]:
        return httpx.post(f"{prefect_server.api_url}/flow_runs/filter", timeout=10, json={
            "deployments": {"name": {"any_": [deployment]}}}).json()

    def wait_for_run(deployment: str) -> dict:
        deadline = time.monotonic() + 90
        while not (found := runs_of(deployment)) and time.monotonic() < deadline:
            time.sleep(1)
        assert found, f"no flow run of {deployment} after 90 s"
        return found[0]

    prefect("work-pool", "create", "local-process", "--type", "process", "--overwrite")
    prefect("deploy", "--prefect-file", str(REPO / "prefect.yaml"), "--name", "retrain", "--name", "rollout")
    time.sleep(10)  # the triggers service loads new automations on its own period
    try:
        send(RETRAINING_NOT_DUE, "{'reason': '17 new training pairs < 200'}")
        send(RETRAINING_DUE, "{'reason': '412 new training pairs ≥ 200'}")
        retrain = wait_for_run("retrain")
        assert retrain["parameters"] == {"config": config, "start": "4a", "end": "5"}
        time.sleep(5)
        assert len(runs_of("retrain")) == 1  # the not-due event started nothing
        assert runs_of("rollout") == []
        send(VERSION_REGISTERED, "{'name': 'x-v1.0', 'location': '/r/x-v1.0'}")
        assert wait_for_run("rollout")["parameters"] == {"config": config}
    finally:  # the session's server outlives this test: nothing of it keeps listening
        api = prefect_server.api_url
        for automation in httpx.post(f"{api}/automations/filter", json={}, timeout=10).json():
            if automation["name"].startswith(("retrain__", "rollout__")):
                httpx.delete(f"{api}/automations/{automation['id']}", timeout=10)
        for deployment in ("retrain", "rollout"):
            for run in runs_of(deployment):
                httpx.delete(f"{api}/flow_runs/{run['id']}", timeout=10)


def test_the_candidate_is_compared_with_the_registered_version_only_when_it_is_here_and_differs(tmp_path):
    """4d's choice of what a retrained adapter is held to (tasks.finetune.evaluate.serving_version)."""
    import hashlib
    import json

    from core.config import load_config
    from harness.project import write_profile
    from tasks.finetune.evaluate import serving_version

    config = load_config(write_profile(tmp_path, {}))
    candidate, registered = tmp_path / "models/lora_weights", tmp_path / "models/registry/x-qa-lora-v1.0"
    for folder, weights in ((candidate, b"new weights"), (registered, b"old weights")):
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(weights)
    assert serving_version(config, candidate) is None  # nothing registered yet

    def register(target: str, weights: bytes) -> None:
        (tmp_path / "reports").mkdir(exist_ok=True)
        (tmp_path / "reports/registration.json").write_text(json.dumps({
            "status": "registered", "name": "x-qa-lora-v1.0", "target": target, "location": str(registered),
            "adapter_sha256": hashlib.sha256(weights).hexdigest()}))

    register("local", b"old weights")
    assert serving_version(config, candidate) == ("x-qa-lora-v1.0", registered)
    register("local", b"new weights")  # the candidate is the registered version: nothing to hold it to
    assert serving_version(config, candidate) is None
    register("hub", b"old weights")  # not on this machine: not compared (said in docs/prefect.md)
    assert serving_version(config, candidate) is None
