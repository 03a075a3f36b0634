"""prefect.yaml and the GPU pool's job template: what `prefect deploy` and a docker worker will read."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json

import pytest
import yaml
from prefect.client.schemas.schedules import CronSchedule
from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration

from harness.project import REPO

pytestmark = pytest.mark.e2e

PREFECT_YAML = yaml.safe_load((REPO / "prefect.yaml").read_text())
GPU_TEMPLATE = json.loads((REPO / "deployments" / "gpu-docker-pool.json").read_text())


def entry_flow(entrypoint: str):
    module, name = entrypoint.split(":")
    return getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)


@pytest.mark.parametrize("deployment", PREFECT_YAML["deployments"], ids=lambda d: d["name"])
def test_every_deployment_names_a_flow_that_takes_its_parameters(deployment):
    flow = entry_flow(deployment["entrypoint"])
    accepted = set(inspect.signature(flow.fn).parameters)
    assert set(deployment.get("parameters", {})) <= accepted
    assert (REPO / deployment["parameters"]["config"]).is_file()
    assert deployment["work_pool"]["name"] in {"local-process", "gpu-docker"}


def test_the_refresh_runs_nightly_on_a_valid_cron():
    nightly = next(d for d in PREFECT_YAML["deployments"] if d["name"] == "nightly")
    assert entry_flow(nightly["entrypoint"]).name == "data-refresh"
    schedule = CronSchedule(**{k: v for k, v in nightly["schedules"][0].items() if k != "active"})
    assert schedule.cron == "0 2 * * *" and schedule.timezone == "UTC"


def container_settings(values: dict) -> dict:
    """What the docker worker passes to the Docker API's container create for these job variables."""
    configuration = asyncio.run(DockerWorkerJobConfiguration.from_template_and_values(GPU_TEMPLATE, values))
    return DockerWorker(work_pool_name="gpu-docker")._build_container_settings(None, configuration)


def test_gpu_job_variables_reach_the_container_create_call():
    # a GPU host talking to the Prefect server elsewhere (a local one would make the worker ask the engine's version)
    values = {"image": "domain-llm-train:latest", "env": {"PREFECT_API_URL": "http://prefect-server:4200/api"}}
    settings = container_settings(values)
    assert settings["image"] == "domain-llm-train:latest"
    assert settings["device_requests"] == [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}]
    assert settings["shm_size"] == "16g"
    # a host without GPUs overrides the request per run
    assert "device_requests" not in container_settings({**values, "container_create_kwargs": {}})


def test_stage_parameters_take_what_users_type():
    """`prefect deployment run … --param end=3` sends the number 3: the deployment's schema accepts it."""
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import ValidationError, validate

    from flows.deployments import fine_tune, run_pipeline

    for flow_, values in ((run_pipeline, {"start": 1, "end": 3}), (fine_tune, {"start": "4b", "end": "4d"})):
        schema = parameter_schema(flow_.fn).model_dump_for_openapi()
        validate(values, schema, raise_on_error=True)
        with pytest.raises(ValidationError):
            validate({"end": [3]}, schema, raise_on_error=True)
