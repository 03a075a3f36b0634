"""The whole pipeline as one Prefect flow whose stages are subflows, run in diagram order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.settings import PREFECT_UI_URL

from core.config import ConfigError, PipelineConfig
from core.stages import KEYS, PIPELINE_ARTIFACT
from flows import collect, finetune, generate, process, register, rollout
from tasks.collect.sources import preflight as collect_preflight
from tasks.common.shared_limits import download_limit_exists, llm_limit_exists
from tasks.finetune.dispatch import dispatch_training
from tasks.finetune.preflight import preflight as finetune_preflight
from tasks.process.stage import task_runner
from tasks.report.console import Said, log_failures_once, recording, summary_markdown

Preflight = Callable[[PipelineConfig], None]


def _grader(config: PipelineConfig) -> None:
    if config.evaluation.judge:
        generate.preflight(config)  # 4d's grader is the stage-3 provider


@dataclass(frozen=True)
class StageFlow:
    """How the pipeline runs a stage (its key and name are core.stages'): the flow, and what to check before any
    stage starts. ``run`` takes (config, preview, explicit)."""

    run: Callable[[PipelineConfig, bool, bool], Awaitable[object]]
    preflight: tuple[Preflight, ...] = ()


async def _collect(config: PipelineConfig, preview: bool, explicit: bool) -> dict:
    documents = await collect.collect(config)
    return {"sources": len(documents), "ok": sum(d.status == "ok" for d in documents)}


def _config_only(stage_flow) -> Callable[[PipelineConfig, bool, bool], Awaitable[object]]:
    return lambda config, preview, explicit: stage_flow(config)


FLOWS: dict[str, StageFlow] = {
    "1": StageFlow(_collect, (collect_preflight, download_limit_exists)),
    "2": StageFlow(lambda config, preview, explicit: process.process.with_options(
        task_runner=task_runner(config))(config)),
    "3": StageFlow(lambda config, preview, explicit: generate.generate(config, preview=preview),
                   (generate.preflight, llm_limit_exists)),
    "4a": StageFlow(_config_only(finetune.baseline_eval), (finetune_preflight,)),
    "4b": StageFlow(_config_only(finetune.train), (finetune_preflight,)),
    "4c": StageFlow(_config_only(finetune.select_checkpoint), (finetune_preflight,)),
    "4d": StageFlow(_config_only(finetune.final_eval), (finetune_preflight, _grader)),
    "5": StageFlow(_config_only(register.register), (register.preflight,)),
    "6": StageFlow(lambda config, preview, explicit: rollout.rollout(config, skip_without_gateway=not explicit)),
}
assert list(FLOWS) == KEYS


def preflight(config: PipelineConfig, stages: list[str]) -> None:
    """Check what the selected stages need (keys, inputs, shared limits) before starting anything, each check once."""
    for check in dict.fromkeys(check for key in stages for check in FLOWS[key].preflight):
        check(config)


async def run_stages(config: PipelineConfig, stages: list[str], preview: bool = False, explicit: bool = True,
                     config_path: str | None = None, dispatch: bool = True) -> dict[str, object]:
    """Run ``stages`` in order, as subflows of the calling flow run, which gets the pipeline summary artifact.

    A full run (``explicit=False``) skips the rollout when no gateway is running. With
    ``orchestration.train_deployment`` set (and ``dispatch``), stage 4 runs as that deployment (the GPU pool)
    with the same config path, and this waits for it. The deployment itself runs with ``dispatch=False``: it is
    where the training happens.
    """
    log_failures_once()
    training = [key for key in stages if key.startswith("4")]
    deployment = config.orchestration.train_deployment if training and dispatch else None
    if deployment and config_path is None:
        raise ConfigError("orchestration.train_deployment needs the config file's path to hand to the deployment")
    # the dispatched stage 4 ("4") runs where 4a-4d would ("4" sorts between "3" and "5")
    planned = sorted(["4", *(key for key in stages if key not in training)]) if deployment else list(stages)
    results: dict[str, object] = {}
    outcomes: dict[str, tuple[str, Said]] = {key: ("not run", Said()) for key in planned}
    try:
        for key in planned:
            with recording() as said:
                outcomes[key] = ("running", said)
                if key == "4":
                    results[key] = await dispatch_training(deployment, config_path, training[0], training[-1])
                else:
                    results[key] = await FLOWS[key].run(config, preview, explicit)
            outcomes[key] = ("completed", said)
    except BaseException as error:
        failed = next(key for key, (outcome, _) in outcomes.items() if outcome == "running")
        outcomes[failed] = (f"failed: {type(error).__name__}: {error}", outcomes[failed][1])
        raise
    finally:
        await acreate_markdown_artifact(key=PIPELINE_ARTIFACT, markdown=summary_markdown(outcomes, PREFECT_UI_URL.value()),
                                        description="Each stage's outcome and figures, with links to its artifact")
    return results


@flow(name="pipeline")
async def pipeline(config: PipelineConfig, stages: list[str], preview: bool = False,
                   explicit: bool = True, config_path: str | None = None,
                   dispatch: bool = True) -> dict[str, object]:
    """The pipeline as a flow run of its own (the CLI); deployments call ``run_stages`` in theirs."""
    return await run_stages(config, stages, preview, explicit, config_path, dispatch)
