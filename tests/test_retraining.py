"""The retraining policy: what a refresh left is worth a training run only when it changed something that matters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.config import Retraining
from core.results import TrainingRun
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
    (Retraining(), 217, "u" * 64, trained(200), False,  # 4b would train the same weights: nothing to register
     "17 new training pairs < 200 (the test questions changed: the next training run is measured on them)"),
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
       max_days=st.none() | st.integers(1, 365), test=st.sampled_from([TEST, "u" * 64]))
def test_a_refresh_that_added_no_training_pair_is_never_worth_a_training_run(pairs, minimum, days, max_days, test):
    """Whatever went to the validation or test side: 4b would train the same weights again."""
    policy = Retraining(min_new_train_pairs=minimum, max_days=max_days)
    decision = retraining_due(policy, pairs, test, trained(pairs, days_ago=days), NOW)
    assert not decision.due and decision.new_train_pairs == 0 and decision.test_changed == (test != TEST)


@given(before=st.integers(0, 5000), added=st.integers(0, 5000), minimum=st.integers(1, 1000))
def test_enough_new_pairs_are_always_due_and_fewer_never_are_by_count(before, added, minimum):
    decision = retraining_due(Retraining(min_new_train_pairs=minimum), before + added, TEST, trained(before), NOW)
    assert decision.new_train_pairs == added and decision.due == (added >= minimum)


@pytest.mark.e2e
@pytest.mark.slow
def test_one_added_pdf_and_the_nightly_run_end_in_a_new_version_serving_by_events_alone(
        prefect_server, sample_pdf_dir, chunked_sample, tiny_model, real_pdf_dir, tmp_path):
    """The loop as a user runs it: prefect.yaml's `nightly`, `retrain` and `rollout` deployed (`prefect deploy` makes
    the automations from its `triggers:`), a process worker, a gateway serving v1.0. One PDF no one here wrote is
    added to the source folder and `nightly` is run: the refresh's event starts `retrain` with the refresh's config
    (templated from the event: Prefect #19501 once left it out), the registration's event starts `rollout`, and the
    gateway serves v1.1, with no other command. A second refresh that finds nothing new starts nothing.
    The tiny model trains and serves: the subject is the wiring, so the gate admits any candidate (what it refuses,
    and that the version serving then stays, is tested in tests/test_finetune_e2e.py and tests/test_register.py)."""
    import json
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    import httpx
    import yaml

    from harness import tiny_model as tiny
    from harness.gateway import GatewayProcess
    from harness.prefect_server import POLLING_WORKER
    from harness.project import NO_EXPORTS, REPO, copy_project, run_pipeline
    from tests.test_prefect_server_e2e import api, logged, prefect, wait_for

    server = prefect_server
    sources = tmp_path / "sources"  # the PDFs the chunked project collected (linked: the same files, nothing new)
    sources.mkdir()
    for pdf in sample_pdf_dir.glob("*.pdf"):
        (sources / pdf.name).symlink_to(pdf)
    root = copy_project(chunked_sample, tmp_path / "project", {
        "data_collector": {"local": {"dir": str(sources)}},
        "finetuning": {**tiny.settings(tiny_model)["finetuning"], "training": {"max_steps": 4, "save_steps": 2}},
        "evaluation": {"max_new_tokens": 8}, "registration": {"require_improvement": "none", "exports": NO_EXPORTS},
        "serving": {"backend": "local", "smoke_questions": 2, "parity_questions": 4}})
    config = root / "config.yaml"
    first = run_pipeline(config, "--start", "3", "--end", "5", env=server.env)  # what a user has before the loop
    assert first.returncode == 0, first.stderr[-3000:]

    def runs_of(deployment: str) -> list[dict]:
        return api(server, "flow_runs", {"deployments": {"name": {"any_": [deployment]}}, "sort": "START_TIME_ASC"})

    def started_by_its_trigger(deployment: str, count: int) -> dict:
        deadline = time.monotonic() + 120
        while len(found := runs_of(deployment)) < count and time.monotonic() < deadline:
            time.sleep(1)
        assert len(found) == count, f"{deployment}: {len(found)} runs, expected {count}"
        run = wait_for(server, found[-1]["id"], {"COMPLETED", "FAILED", "CRASHED"}, timeout_s=600)
        assert run["state_type"] == "COMPLETED", f"{deployment}: {run['state']['message']}"
        assert run["created_by"]["type"] == "AUTOMATION", run["created_by"]  # what the UI shows as its trigger
        assert run["created_by"]["display_value"].startswith(f"{deployment}__"), run["created_by"]
        return run

    def nightly() -> str:
        """The refresh's decision, as its run log says it (logs reach the server in batches, after the state) and
        as its artifact keeps it."""
        out = prefect(server, "deployment", "run", "data-refresh/nightly", "--param", f"config={config}").stdout
        run_id = out.split("UUID:")[1].split()[0]
        run = wait_for(server, run_id, {"COMPLETED", "FAILED", "CRASHED"}, timeout_s=300)
        assert run["state_type"] == "COMPLETED", run["state"]["message"]
        [artifact] = api(server, "artifacts", {"artifacts": {"flow_run_id": {"any_": [run_id]},
                                                             "key": {"any_": ["retraining-decision"]}}})
        said = logged(server, {"logs": {"flow_run_id": {"any_": [run_id]}}}, lambda m: m.startswith("retraining: "))
        assert said, "the refresh's log has no retraining decision"
        verdict, reason = said[0].removeprefix("retraining: ").split(", ", 1)
        assert artifact["data"].startswith(f"# Retraining {verdict}\n\n{reason}\n"), artifact["data"]
        return said[0]

    with GatewayProcess({}, args=("--config", str(config)), cwd=str(root)) as gateway:
        gateway.wait_ready()
        assert httpx.get(f"{gateway.url}/models", timeout=10).json()["active_adapter"] == "pregnancy-qa-lora-v1.0"
        settings = yaml.safe_load(config.read_text())
        settings["serving"]["gateway_url"] = gateway.url  # stage 6 finds this gateway
        config.write_text(yaml.safe_dump(settings))
        prefect(server, "work-pool", "create", "local-process", "--type", "process", "--overwrite")
        prefect(server, "deploy", "--prefect-file", str(REPO / "prefect.yaml"),
                "--name", "nightly", "--name", "retrain", "--name", "rollout")
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "local-process"],
                                  cwd=REPO, env={**server.env, **POLLING_WORKER}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            time.sleep(10)  # the triggers service loads new automations on its own period
            (sources / "libtasn1.pdf").write_bytes((real_pdf_dir / "libtasn1.pdf").read_bytes())  # 36 pages: to training
            assert re.fullmatch(r"retraining: due, \d+ new training pairs ≥ 5", nightly())
            retrain = started_by_its_trigger("retrain", 1)
            assert retrain["parameters"] == {"config": str(config), "start": "4a", "end": "5"}
            rollout = started_by_its_trigger("rollout", 1)
            assert rollout["parameters"] == {"config": str(config)}
            models = httpx.get(f"{gateway.url}/models", timeout=10).json()
            assert models["active_adapter"] == "pregnancy-qa-lora-v1.1", models
            registration = json.loads((root / "reports/registration.json").read_text())
            assert registration["lineage"]["previous_version"] == "pregnancy-qa-lora-v1.0"
            assert json.loads((root / "reports/rollout.json").read_text())["status"] == "switched"

            assert nightly() == "retraining: not due, 0 new training pairs < 5"  # nothing new: nothing trains
            time.sleep(10)
            assert len(runs_of("retrain")) == 1 and len(runs_of("rollout")) == 1
        finally:  # the session's server outlives this test: nothing of it keeps running
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
            for automation in api(server, "automations", {}):
                httpx.delete(f"{server.api_url}/automations/{automation['id']}", timeout=10)
            for deployment in api(server, "deployments", {"deployments": {"name": {"any_": [
                    "nightly", "retrain", "rollout"]}}}):
                httpx.delete(f"{server.api_url}/deployments/{deployment['id']}", timeout=10)


def test_the_candidate_is_held_to_the_version_registered_last_fetched_from_its_registry(tmp_path, monkeypatch):
    """What 4d compares a retrained adapter with (tasks.release.registry.serving_version): the last registered
    version's files, from the local registry or downloaded from the Hub (here a loopback server speaking its API)."""
    import hashlib
    import json

    import huggingface_hub.constants

    from core.config import load_config
    from harness.hub import FakeHub
    from harness.project import write_profile
    from tasks.release.registry import RegistryError, serving_version

    files = ("adapter_model.safetensors", "adapter_config.json")
    candidate, registered = tmp_path / "models/lora_weights", tmp_path / "models/registry/x-qa-lora-v1.0"
    for folder, weights in ((candidate, b"new weights"), (registered, b"old weights")):
        folder.mkdir(parents=True)
        (folder / files[0]).write_bytes(weights)
        (folder / files[1]).write_text("{}")
    local = load_config(write_profile(tmp_path, {}))
    assert serving_version(local, candidate, files) is None  # nothing registered yet

    def register(target: str, weights: bytes, location: str = str(registered)) -> None:
        (tmp_path / "reports").mkdir(exist_ok=True)
        (tmp_path / "reports/registration.json").write_text(json.dumps({
            "status": "registered", "name": "x-qa-lora-v1.0", "target": target, "location": location,
            "adapter_sha256": hashlib.sha256(weights).hexdigest()}))

    register("local", b"old weights")
    assert serving_version(local, candidate, files) == ("x-qa-lora-v1.0", registered)
    register("local", b"new weights")  # the candidate is the registered version: nothing to hold it to
    assert serving_version(local, candidate, files) is None
    register("hub", b"old weights")  # registered where this config no longer registers: not compared
    assert serving_version(local, candidate, files) is None

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_USERNAME", "alice")
    with FakeHub(token="hf_secret_token") as hub:
        hub.repos["alice/x-qa-lora-v1.0"] = {"private": True, "commits": [{"oid": "1" * 40}],
                                             "files": {files[0]: b"old weights", files[1]: b"{}", "README.md": b"-"}}
        hub_config = load_config(write_profile(tmp_path, {"registration": {"target": "hub", "hub_url": hub.url}}))
        register("hub", b"old weights", f"{hub.url}/alice/x-qa-lora-v1.0")
        monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
        name, folder = serving_version(hub_config, candidate, files)
        assert name == "x-qa-lora-v1.0" and (folder / files[0]).read_bytes() == b"old weights"
        assert (folder / files[1]).read_text() == "{}" and folder.is_relative_to(tmp_path / "hf-cache")
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
        (tmp_path / "hf-cache").rename(tmp_path / "hf-cache-old")  # nothing cached: asked again
        with pytest.raises(RegistryError, match=r"refused to download alice/x-qa-lora-v1.0 \(HTTP 401\)"):
            serving_version(hub_config, candidate, files)


def test_a_gateway_started_after_a_refused_candidate_serves_the_version_registered(tmp_path):
    """4c installs every candidate in models/lora_weights, also the one stage 5 then refuses: a gateway started later
    serves the registered version, and never names weights it was not registered with after a version."""
    import hashlib
    import json

    from core.config import load_config
    from core.gateway import settings_from_config
    from harness.project import write_profile

    config = load_config(write_profile(tmp_path, {}))
    installed, registered = tmp_path / "models/lora_weights", tmp_path / "models/registry/pregnancy-qa-lora-v1.0"
    for folder, weights in ((installed, b"refused candidate"), (registered, b"v1.0")):
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(weights)
        (folder / "adapter_config.json").write_text("{}")

    def register(target: str, weights: bytes) -> None:
        (tmp_path / "reports").mkdir(exist_ok=True)
        (tmp_path / "reports/registration.json").write_text(json.dumps({
            "status": "registered", "name": "pregnancy-qa-lora-v1.0", "target": target, "location": str(registered),
            "adapter_sha256": hashlib.sha256(weights).hexdigest()}))

    def served(backend: str) -> tuple[str | None, str | None]:
        settings = settings_from_config(config, backend)
        return settings.adapter_name, settings.adapter_path

    register("local", b"v1.0")
    assert served("local") == served("llamacpp") == ("pregnancy-qa-lora-v1.0", str(registered))
    register("hub", b"v1.0")  # the registered weights are not here: what is installed is served as unregistered
    assert served("local") == ("pregnancy-qa-lora", str(installed))
    register("hub", b"refused candidate")
    assert served("local") == ("pregnancy-qa-lora-v1.0", str(installed))
