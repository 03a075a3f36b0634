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

from core import artifacts, results
from core.config import PipelineConfig
from core.results import EvaluationReport, Registration, Rollout
from flows.threaded import threaded_flow
from tasks.release.rollout import RolloutFailed, blue_green, in_gateway, rollout_said
from tasks.report.console import say
from tasks.report.page import write_project_report


@threaded_flow("rollout")
def rollout(config: PipelineConfig, skip_without_gateway: bool = False) -> dict:
    """``skip_without_gateway``: a full pipeline run on a machine with nothing serving skips (and says so)."""
    registration = results.read(config, Registration, "6")
    eval_report = results.read(config, EvaluationReport, "6", "eval_finetuned")
    started = {"adapter": registration.name, "mode": config.serving.rollout, "gateway": config.serving.gateway_url,
               "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    roll = blue_green if config.serving.rollout == "containers" else in_gateway
    record = Rollout.model_validate({**started, **roll(config, registration, eval_report, started)})
    if record.status == "skipped":
        if not skip_without_gateway:
            raise RolloutFailed(record.reason)
        say(f"6 rollout: skipped, {record.reason}; then run --stage 6")
        return results.dump(record)
    record.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    results.write(config, record)
    if (summary := artifacts.load_if_present(config, "comparison")) and record.parity:
        write_project_report(config, summary, results.dump(record))  # the page again, with the served parity
    for line in rollout_said(record):  # RolloutFailed when the new version was not put into service
        say(line)
    return results.dump(record)
