"""Stage 6 — rollout: put the registered adapter into service, or keep the old one serving.

Two ways, by ``serving.rollout``:
- ``in_gateway``: the running gateway loads the adapter beside the active one → smoke test
  (answers, differs from the base model, same answers as 4d measured) → switch (atomic in the
  gateway) → unload the previous one once drained.
- ``containers`` (blue/green): a new gateway container for the adapter starts beside the old one
  → ready → the same smoke test, on the new container directly → the edge switches to it →
  the old container is stopped once its requests are done → the previous adapter is unloaded.
Any failure before the switch removes the newcomer and leaves the previous one serving.
"""

from __future__ import annotations

from datetime import UTC, datetime

from core import artifacts
from core.config import PipelineConfig
from core.files import atomic_write_json
from flows.report import say
from flows.threaded import threaded_flow
from tasks.rollout import RolloutFailed, blue_green, in_gateway


@threaded_flow("rollout")
def rollout(config: PipelineConfig, skip_without_gateway: bool = False) -> dict:
    """``skip_without_gateway``: a full pipeline run on a machine with nothing serving skips (and says so)."""
    registration = artifacts.load(config, "registration", "6")
    eval_report = artifacts.load(config, "eval_finetuned", "6")
    record: dict = {"adapter": registration["name"], "mode": config.serving.rollout, "gateway": config.serving.gateway_url,
                    "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    roll = blue_green if config.serving.rollout == "containers" else in_gateway
    record = roll(config, registration, eval_report, record)
    if record["status"] == "skipped":
        if not skip_without_gateway:
            raise RolloutFailed(record["reason"])
        say(f"6 rollout: skipped, {record['reason']}; then run --stage 6")
        return record
    _finish(config, record)
    if record["status"] == "rolled_back":
        raise RolloutFailed(f"{record['error']}; {record['active'] or 'the base model'} is still serving"
                            + (f" (the new gateway's log: docker logs {record['container']})" if "container" in record else ""))
    if record["status"] == "already_active":
        say(f"6 rollout: {record['adapter']} is already the active adapter")
        return record
    smoke = record["smoke_test"]
    where = f" in {record['container']}" if "container" in record else ""
    say(f"6 rollout: {record['previous'] or 'base model'} → {record['adapter']}{where} on {record['backend']}; smoke test "
        f"{smoke['questions']} questions, {smoke['differs_from_base']} differ from base, agreement with 4d "
        f"{smoke['agreement_with_4d']:.0%}")
    return record


def _finish(config: PipelineConfig, record: dict) -> None:
    record["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    atomic_write_json(artifacts.path(config, "rollout"), record)
