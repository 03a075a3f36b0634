"""Stage 4 on the GPU pool: the pipeline hands its config's path to the training deployment and waits for its run,
as a subflow, so the UI shows the dispatched run inside the pipeline's."""

from __future__ import annotations


class TrainingDeploymentFailed(RuntimeError):
    """The dispatched stage-4 flow run did not complete."""


async def dispatch_training(deployment: str, config_path: str, start: str, end: str) -> dict:
    from prefect.deployments import run_deployment

    run = await run_deployment(deployment, parameters={"config": config_path, "start": start, "end": end},
                               as_subflow=True)
    if not run.state.is_completed():
        raise TrainingDeploymentFailed(f"stage 4 on deployment '{deployment}' ended {run.state.name}: "
                                       f"see flow run {run.name} ({run.id}) in the Prefect UI")
    return {"deployment": deployment, "flow_run": str(run.id), "state": run.state.name}
