"""Stage 6 — rollout: put the registered adapter into service, or keep the old one serving.

Two ways, by ``serving.rollout``:
- ``in_gateway``: the running gateway loads the adapter beside the active one → smoke test
  (answers, differs from the base model) → parity gate (4d's test questions as served, compared
  with 4d) → switch (atomic in the gateway) → unload the previous one once drained.
- ``containers`` (blue/green): a new gateway container for the adapter starts beside the old one
  → ready → the same smoke test and parity gate, on the new container directly → the edge
  switches to it → the old container is stopped once its requests are done → the previous
  adapter is unloaded.
Any failure before the switch removes the newcomer and leaves the previous one serving. An
adapter already active is checked by the parity gate alone.
"""

from __future__ import annotations

from datetime import UTC, datetime

from core import artifacts
from core.config import PipelineConfig
from core.files import atomic_write_json
from flows.threaded import threaded_flow
from tasks.release.rollout import RolloutFailed, blue_green, in_gateway
from tasks.report.console import say
from tasks.report.page import report_title, write_report


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
    _report(record)
    return record


def _report(record: dict) -> None:
    """The CLI lines of a finished rollout; RolloutFailed (exit 1) when the new version was not put into service."""
    if record["status"] == "rolled_back":
        raise RolloutFailed(f"{record['error']}; {record['active'] or 'the base model'} is still serving"
                            + (f" (the new gateway's log: docker logs {record['container']})" if "container" in record else ""))
    if record["status"] == "parity_failed":
        raise RolloutFailed(f"{record['error']}; {record['adapter']} is serving as it was (nothing to roll back to)")
    if record["status"] == "already_active":
        say(f"6 rollout: {record['adapter']} is already the active adapter")
    else:
        smoke = record["smoke_test"]
        where = f" in {record['container']}" if "container" in record else ""
        say(f"6 rollout: {record['previous'] or 'base model'} → {record['adapter']}{where} on {record['backend']}; "
            f"smoke test {smoke['questions']} questions, {smoke['differs_from_base']} differ from base")
    say(f"6 parity: {record['parity']['headline']}")
    if record["warning"]:
        say(f"6 parity warning: {record['warning']}")


def _finish(config: PipelineConfig, record: dict) -> None:
    """rollout.json, and the report page again with the served parity beside 4d's numbers."""
    record["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    atomic_write_json(artifacts.path(config, "rollout"), record)
    if (summary := artifacts.load_if_present(config, "comparison")) and "parity" in record:
        write_report(artifacts.report_page(config), summary,
                     artifacts.load_if_present(config, "checkpoint_selection"),
                     artifacts.load_if_present(config, "train_log"), report_title(config.domain, config.use_case), record)
