"""prefect.yaml and the GPU pool's job template: what `prefect deploy` and a docker worker will read."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.client.schemas.schedules import CronSchedule
from prefect_docker.worker import DockerWorker, DockerWorkerJobConfiguration

from harness.project import REPO

pytestmark = pytest.mark.e2e

PREFECT_YAML = yaml.safe_load((REPO / "prefect.yaml").read_text())
GPU_TEMPLATE = json.loads((REPO / "deployments" / "gpu-docker-pool.json").read_text())
KUBERNETES_TEMPLATE = REPO / "deployments" / "gpu-kubernetes-pool.json"


def entry_flow(entrypoint: str):
    module, name = entrypoint.split(":")
    return getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)


@pytest.mark.parametrize("deployment", PREFECT_YAML["deployments"], ids=lambda d: d["name"])
def test_every_deployment_names_a_flow_that_takes_its_parameters(deployment):
    flow = entry_flow(deployment["entrypoint"])
    accepted = set(inspect.signature(flow.fn).parameters)
    assert set(deployment.get("parameters", {})) <= accepted
    assert (REPO / deployment["parameters"]["config"]).is_file()
    assert deployment["work_pool"]["name"] in {"local-process", "gpu-docker", "gpu-kubernetes"}


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


def test_the_kubernetes_template_extends_the_workers_own_and_gives_the_pod_gpus_shared_memory_and_a_node():
    """No cluster here: the template is checked against prefect-kubernetes' own default template and rendered by its
    job configuration, as the worker renders a flow run's Job."""
    from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

    template = json.loads(KUBERNETES_TEMPLATE.read_text())
    default = KubernetesWorker.get_default_base_job_template()
    assert set(default["variables"]["properties"]) < set(template["variables"]["properties"])
    assert set(default["job_configuration"]) == set(template["job_configuration"])
    values = {"image": "registry.example/domain-llm-train:1", "gpu_count": 8, "shm_size": "32Gi",
              "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}
    configuration = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(template, values))
    pod = configuration.job_manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == values["image"] and container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}}]
    assert pod["nodeSelector"] == values["node_selector"]
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    defaults = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(template, {}))
    assert defaults.job_manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == \
        {"nvidia.com/gpu": 1}  # one GPU unless a run asks for more; no cpu/memory limit unless set


def test_prefect_accepts_the_kubernetes_template_for_a_kubernetes_pool(prefect_server):
    """`prefect work-pool create --type kubernetes --base-job-template …` against a real Prefect server."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url}
    prefect = str(Path(sys.executable).with_name("prefect"))
    created = subprocess.run([prefect, "work-pool", "create", "gpu-kubernetes-test", "--type", "kubernetes",
                              "--base-job-template", str(KUBERNETES_TEMPLATE), "--overwrite"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr
    shown = subprocess.run([prefect, "work-pool", "inspect", "gpu-kubernetes-test", "--output", "json"],
                           capture_output=True, text=True, env=env, timeout=120)
    pool = json.loads(shown.stdout)
    assert pool["type"] == "kubernetes"
    assert pool["base_job_template"] == json.loads(KUBERNETES_TEMPLATE.read_text())
