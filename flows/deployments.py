"""The flows that prefect.yaml deploys: each takes the config file's path, so a deployment is plain JSON.

run-pipeline  the whole pipeline (stage 4 dispatched to the GPU pool when orchestration.train_deployment is set)
data-refresh  stages 1–3 on a schedule: only new or changed sources are fetched, converted and sent to the LLM
fine-tune     stage 4 (4a–4d), the flow the GPU Docker pool runs
roll-out      stage 6 against the running gateway
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from core.config import load_config
from core.stages import select_stages
from flows.pipeline import preflight, run_stages
from tasks.common.events import VERSION_REGISTERED, announce
from tasks.finetune.retraining import decide_and_announce
from tasks.report.console import say

StageKey = str | int  # what users type: `--param end=3` arrives as the number 3, `end=4b` as text


async def _run(config: str, start: StageKey, end: StageKey, explicit: bool = True, dispatch: bool = True) -> dict:
    """The stages from ``start`` to ``end``; a version they registered and did not roll out is announced (the
    rollout deployment's trigger)."""
    settings = load_config(Path(config))
    stages = [s.key for s in select_stages(start=str(start), end=str(end))[0]]
    preflight(settings, stages)
    done = await run_stages(settings, stages, explicit=explicit, config_path=config, dispatch=dispatch)
    if "6" not in stages and (registered := done.get("5")) and registered["status"] == "registered":
        announce(settings, VERSION_REGISTERED, config, {"name": registered["name"], "location": registered["location"]})
    return done


@flow(name="run-pipeline")
async def run_pipeline(config: str = "configs/local.yaml", start: StageKey = "1", end: StageKey = "6") -> dict:
    return await _run(config, start, end, explicit=(str(start), str(end)) != ("1", "6"))


@flow(name="data-refresh")
async def data_refresh(config: str = "configs/local.yaml") -> dict:
    """Stages 1-3, then whether the new data is worth a training run (orchestration.retraining), kept as an
    artifact, emitted as the event the retrain deployment's trigger reads, and said."""
    refreshed = await _run(config, "1", "3")
    decision = decide_and_announce(load_config(Path(config)), config)
    say(decision.line())
    return {**refreshed, "retraining": decision.payload()}


@flow(name="fine-tune")
async def fine_tune(config: str = "configs/local.yaml", start: StageKey = "4a", end: StageKey = "4d") -> dict:
    return await _run(config, start, end, dispatch=False)  # this is where stage 4 runs


@flow(name="roll-out")
async def roll_out(config: str = "configs/local.yaml") -> dict:
    return await _run(config, "6", "6")
