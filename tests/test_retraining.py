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
def test_the_decision_reaches_a_real_prefect_server_as_an_event_a_trigger_can_match(prefect_server, tmp_path):
    """What `data-refresh` emits after stages 1-3 (flows/deployments.py), sent from a process of its own as the
    flow run's would be, and read back from the server's event store."""
    import subprocess
    import sys
    import time

    import httpx

    from harness.project import REPO, write_profile

    config = write_profile(tmp_path, {})
    code = ("import sys; from datetime import UTC, datetime; from pathlib import Path; "
            "from core.config import Retraining, load_config; "
            "from tasks.finetune.retraining import announce, retraining_due; "
            "config = load_config(Path(sys.argv[1])); "
            "announce(config, retraining_due(Retraining(), 412, 't' * 64, None, datetime.now(UTC)), sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(config)], cwd=REPO, check=True, timeout=120,
                   env={**prefect_server.env})
    deadline, found = time.monotonic() + 60, []
    while not found and time.monotonic() < deadline:
        reply = httpx.post(f"{prefect_server.api_url}/events/filter", timeout=10, json={
            "filter": {"event": {"name": ["domain-llm.retraining.due"]}}, "limit": 10})
        reply.raise_for_status()
        found = [e for e in reply.json()["events"] if e["payload"].get("config") == str(config)]
        time.sleep(0.5)
    assert found, "no domain-llm.retraining.due event with this config's path"
    event = found[0]
    assert event["resource"]["prefect.resource.id"].startswith("domain-llm.dataset.")
    assert event["payload"]["reason"] == "no finished training run yet" and event["payload"]["train_pairs"] == 412
