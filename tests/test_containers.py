"""Real containers on a real Docker engine: the project's own private dockerd (scripts/docker_engine.sh),
images built on the locally made base, every container on the host network so traffic stays on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from harness.docker import DockerEngine, build_image, cpu_torch_buildargs
from harness.gateway import ADMIN_TOKEN
from harness.loopback import free_port
from harness.prefect_server import POLLING_WORKER
from harness.project import REPO, rollout_project, run_pipeline, write_profile
from harness.vllm import fake_vllm
from tasks.release.containers import ROLE

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.slow]

LABEL = "domain-llm.test"
MODEL = "meta-llama/Llama-3.2-3B-Instruct"
ADAPTER = "pregnancy-qa-lora-v1.0"


@pytest.fixture(scope="module")
def docker_host():
    with DockerEngine() as engine:
        yield engine.host


@pytest.fixture(scope="module")
def docker_client(docker_host):
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=600)

    def remove_ours() -> None:  # a run killed mid-test leaves containers the engine restarts (unless-stopped)
        for label in (LABEL, ROLE, "com.docker.compose.project=domain-llm"):
            for container in client.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)

    remove_ours()
    try:
        yield client
    finally:
        remove_ours()
        client.close()


def rollout(root):
    return run_pipeline(root / "config.yaml", "--stage", "6", env={**os.environ, "ADMIN_TOKEN": ADMIN_TOKEN}, timeout=300)


def wait_ready(url: str, container, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            raise AssertionError(f"the container exited: {container.logs()[-3000:].decode()}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready after {timeout_s} s: {container.logs()[-3000:].decode()}")


@pytest.fixture(scope="module")
def images(docker_host, docker_client):
    """`scripts/run_pipeline.sh --build` as a user runs it, on the local base, the training image with the CPU torch."""
    with cpu_torch_buildargs() as torch_source:
        env = {**os.environ, "DOCKER_HOST": docker_host, "DOCKER_BUILD_NETWORK": "host", **torch_source,
               **{f"{image}_BASE_IMAGE": DockerEngine.BASE_IMAGE for image in ("GATEWAY", "EDGE", "GPU")}}
        result = subprocess.run(["bash", "scripts/run_pipeline.sh", "--build"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {name: docker_client.images.get(f"domain-llm-{name}:latest") for name in ("gateway", "edge", "train")}


def test_the_gateway_image_serves_every_route_as_a_healthy_non_root_container(docker_client, images):
    image = images["gateway"]
    assert image.attrs["Config"]["User"] == "gateway"
    assert image.attrs["Size"] < 500 * 1024 * 1024  # no torch, no model code: the gateway only

    port = free_port()
    with fake_vllm(MODEL) as vllm:
        vllm.adapters[ADAPTER] = "/adapters/v1.0"
        container = docker_client.containers.run(
            image.id, detach=True, network_mode="host", labels={LABEL: "1"},
            environment={"PORT": str(port), "GATEWAY_VLLM_URL": vllm.url, "GATEWAY_BASE_MODEL": MODEL,
                         "GATEWAY_ADAPTER_NAME": ADAPTER, "GATEWAY_DOMAIN": "pregnancy", "API_TOKEN": "t0ken"})
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, container)
        live = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/live"], cwd=REPO,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "GATEWAY_URL": url, "API_TOKEN": "t0ken"})
        assert live.returncode == 0, live.stdout[-3000:]
        assert httpx.post(f"{url}/ask", json={"question": "Is it safe?"}, timeout=30).status_code == 401
        assert "gateway_requests_total" in httpx.get(f"{url}/metrics", timeout=10).text

        assert container.exec_run(["id", "-u"]).output.strip() == b"10001"
        deadline = time.monotonic() + 90
        while (health := container.attrs["State"].get("Health", {}).get("Status")) != "healthy":
            assert time.monotonic() < deadline and health != "unhealthy", container.attrs["State"]
            time.sleep(1)
            container.reload()
        requests_log = container.exec_run(["cat", "/app/logs/requests.log"]).output.decode()
        assert '"route": "/ask"' in requests_log and "t0ken" not in requests_log
        container.stop(timeout=10)
    assert container.wait(timeout=30)["StatusCode"] == 0  # SIGTERM: a clean shutdown, not a kill


def test_blue_green_gateway_containers_switch_under_load_and_a_broken_adapter_leaves_the_old_serving(
        docker_host, docker_client, images, tmp_path):
    """Stage 6 with serving.rollout: containers, driving the engine through the Docker API: a first rollout starts
    the edge and a gateway; the next starts a gateway beside it, switches the edge under load (no request fails)
    and stops the old one; a new gateway image for the same adapter rolls out the same way; one whose smoke
    test fails is stopped and the old one keeps serving."""
    import io
    import json

    from harness.gateway import LoadGenerator
    from tasks.release import containers

    v1, v2, broken = ADAPTER, "pregnancy-qa-lora-v1.1", "pregnancy-qa-lora-v1.2"
    public, blue, green = free_port(), free_port(), free_port()
    edge_url = f"http://127.0.0.1:{public}"

    def gateways(status: str) -> dict[str, dict]:
        return {c.name: c.labels for c in docker_client.containers.list(
            all=True, filters={"label": f"{containers.ROLE}=gateway", "status": status})}

    def served_port() -> int:
        return containers.served_port(docker_client.containers.get(containers.EDGE_NAME))

    with fake_vllm(MODEL) as vllm:
        serving = {"rollout": "containers", "docker_host": docker_host, "host": "127.0.0.1", "port": public,
                   "gateway_url": edge_url, "vllm_url": vllm.url, "container_ports": [blue, green], "drain_timeout_s": 20}
        try:
            # an edge an earlier config left on another port (the engine restarts it: unless-stopped) is replaced
            stale = containers.start_edge(docker_client, images["edge"], "127.0.0.1", free_port(), blue, 30)
            first = rollout(rollout_project(tmp_path, v1, serving, finetuning={"base_model": MODEL}))
            assert first.returncode == 0, first.stderr
            assert stale.id not in {c.id for c in docker_client.containers.list(all=True)}
            assert httpx.get(f"{edge_url}/models").json()["active_adapter"] == v1
            assert served_port() == blue
            # tokens reach the container as files only its user reads; `docker inspect` shows where, not what
            gateway = docker_client.containers.get(f"domain-llm-gateway-{v1}-{blue}")
            assert "ADMIN_TOKEN_FILE=/run/secrets/admin_token" in gateway.attrs["Config"]["Env"]
            assert ADMIN_TOKEN not in json.dumps(gateway.attrs)
            listing = gateway.exec_run(["ls", "-ln", "/run/secrets"]).output.decode()
            assert "-r-------- 1 10001 10001" in listing, listing
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            assert httpx.get(f"http://127.0.0.1:{blue}/admin/adapters", headers=admin).status_code == 200
            for path in ("/admin/adapters", "/%61dmin/adapters", "//admin/adapters", "/ADMIN/adapters", "/admin"):
                assert httpx.get(f"{edge_url}{path}", headers=admin).status_code == 404, path  # the edge never forwards

            root = rollout_project(tmp_path, v2, serving, finetuning={"base_model": MODEL})
            with LoadGenerator(edge_url, concurrency=8) as load:
                result = rollout(root)
                deadline = time.monotonic() + 30
                while load.adapters[v2] < 20 and time.monotonic() < deadline:  # the load goes on past the switch
                    time.sleep(0.05)
            assert result.returncode == 0, result.stderr
            assert set(load.statuses) == {200}, load.statuses
            assert load.adapters[v1] > 0 and load.adapters[v2] > 0
            assert f"{v1} → {v2} in domain-llm-gateway-{v2}-{green}" in result.stdout
            running = gateways("running")
            assert list(running) == [f"domain-llm-gateway-{v2}-{green}"]
            assert running[f"domain-llm-gateway-{v2}-{green}"][containers.VERSION] == "1.1"
            old = docker_client.containers.get(f"domain-llm-gateway-{v1}-{blue}")
            assert old.status == "exited" and old.attrs["State"]["ExitCode"] == 0  # stopped cleanly, kept for its logs
            assert served_port() == green
            assert vllm.adapters == {v2: f"/models/registry/{v2}"}  # loaded by the new gateway, the old one unloaded
            record = json.loads((root / "reports/rollout.json").read_text())
            assert record["status"] == "switched" and record["mode"] == "containers"
            assert record["previous"] == v1 and record["container"] == f"domain-llm-gateway-{v2}-{green}"
            assert record["smoke_test"]["differs_from_base"] == 3
            again = rollout(root)
            assert again.returncode == 0 and "already the active adapter" in again.stdout

            # a new gateway build serving the same adapter is rolled out the same way, beside the old container
            docker_client.images.build(fileobj=io.BytesIO(b"FROM domain-llm-gateway:latest\nLABEL rebuilt=1\n"),
                                       tag="domain-llm-gateway:rebuilt", rm=True)
            serving["gateway_image"] = "domain-llm-gateway:rebuilt"
            rebuilt = rollout(rollout_project(tmp_path, v2, serving, finetuning={"base_model": MODEL}))
            assert rebuilt.returncode == 0, rebuilt.stderr
            assert list(gateways("running")) == [f"domain-llm-gateway-{v2}-{blue}"]
            assert served_port() == blue and set(vllm.adapters) == {v2}

            vllm.faults.empty_answers.add(broken)
            root = rollout_project(tmp_path, broken, serving, finetuning={"base_model": MODEL})
            with LoadGenerator(edge_url, concurrency=8) as load:
                failed = rollout(root)
            assert failed.returncode == 1
            assert f"answers from {broken} are empty" in failed.stderr and f"{v2} is still serving" in failed.stderr
            assert f"docker logs domain-llm-gateway-{broken}-{green}" in failed.stderr
            assert set(load.statuses) == {200} and set(load.adapters) == {v2}, (load.statuses, load.adapters)
            assert list(gateways("running")) == [f"domain-llm-gateway-{v2}-{blue}"]
            assert f"domain-llm-gateway-{broken}-{green}" in gateways("exited")
            assert served_port() == blue and set(vllm.adapters) == {v2}
            assert json.loads((root / "reports/rollout.json").read_text())["status"] == "rolled_back"
        finally:
            for container in docker_client.containers.list(all=True, filters={"label": containers.ROLE}):
                container.remove(force=True)


def test_serve_starts_the_compose_stack_and_the_first_gateway_container_and_stop_removes_it_all(
        docker_host, docker_client, images, tmp_path):
    """scripts/run_pipeline.sh --serve / --stop as a user runs them, with the compose file unchanged: only the
    vLLM and Prometheus images are swapped (VLLM_IMAGE, PROMETHEUS_IMAGE) for a stand-in vLLM and Debian's
    Prometheus built here; every port comes from the config."""
    from tasks.release import containers

    build_image(docker_client, "tests/images/vllm-standin.Dockerfile", "domain-llm-vllm-standin:test")
    build_image(docker_client, "tests/images/prometheus.Dockerfile", "domain-llm-prometheus:test")
    public, vllm_port, prometheus_port, blue, green = (free_port() for _ in range(5))
    root = rollout_project(tmp_path, ADAPTER, {
        "rollout": "containers", "docker_host": docker_host, "host": "127.0.0.1", "port": public,
        "gateway_url": f"http://127.0.0.1:{public}", "vllm_port": vllm_port, "vllm_url": f"http://127.0.0.1:{vllm_port}",
        "vllm_gpus": "none", "prometheus_port": prometheus_port, "container_ports": [blue, green], "backend_registry_dir": None},
        finetuning={"base_model": MODEL})
    env = {**os.environ, "DOCKER_HOST": docker_host, "VLLM_IMAGE": "domain-llm-vllm-standin:test",
           "PROMETHEUS_IMAGE": "domain-llm-prometheus:test", "HF_CACHE": str(tmp_path / "hf-cache")}

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "scripts/run_pipeline.sh", *args, "--config", str(root / "config.yaml")],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)

    try:
        served = script("--serve")
        assert served.returncode == 0, served.stdout[-3000:] + served.stderr[-3000:]
        assert f"gateway at http://127.0.0.1:{public}" in served.stdout
        answer = httpx.post(f"http://127.0.0.1:{public}/ask", json={"question": "Is it safe?"}, timeout=30).json()
        assert answer["answer"] == f"[{ADAPTER}] Is it safe?" and answer["adapter_version"] == "1.0"
        # loaded into vLLM by the registry path as the host names it (the compose file mounts it at the same path)
        loaded = httpx.get(f"http://127.0.0.1:{vllm_port}/v1/models", timeout=5).json()["data"]
        assert {m["id"]: m["root"] for m in loaded}[ADAPTER] == str(root / "models/registry" / ADAPTER)
        labels = {c.labels.get("com.docker.compose.service") or c.labels.get(containers.ROLE)
                  for c in docker_client.containers.list()}
        assert labels == {"vllm", "prometheus", "edge", "gateway"}, labels
        # Prometheus scrapes the edge and vLLM on the configured ports and evaluates alerts.yml (every 15 s)
        deadline = time.monotonic() + 90
        while True:
            targets = httpx.get(f"http://127.0.0.1:{prometheus_port}/api/v1/targets", timeout=5).json()["data"]
            health = {t["labels"]["job"]: (t["scrapeUrl"], t["health"]) for t in targets["activeTargets"]}
            groups = httpx.get(f"http://127.0.0.1:{prometheus_port}/api/v1/rules", timeout=5).json()["data"]["groups"]
            rules = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
            scraped = all(state == "up" for _, state in health.values())
            if (scraped and rules and "unknown" not in rules.values()) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert health == {"gateway": (f"http://localhost:{public}/metrics", "up"),
                          "vllm": (f"http://localhost:{vllm_port}/metrics", "up")}, health
        assert rules and set(rules.values()) == {"ok"}, rules  # every alert rule loaded and evaluated cleanly

        stopped = script("--stop")
        assert stopped.returncode == 0, stopped.stderr
        assert docker_client.containers.list(all=True, filters={"label": containers.ROLE}) == []
        assert docker_client.containers.list(all=True, filters={"label": "com.docker.compose.project=domain-llm"}) == []
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{public}/health", timeout=2)
    finally:
        for label in (containers.ROLE, "com.docker.compose.project=domain-llm"):
            for container in docker_client.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)


@pytest.fixture(scope="module")
def training_image(images):
    return images["train"]


def test_a_docker_pool_runs_the_data_refresh_in_the_project_image(docker_host, docker_client, training_image,
                                                                   tmp_path, sample_pdf_dir):
    """prefect-docker worker + the project's pool template: the flow runs in a container, its logs reach Prefect,
    its outputs land in the mounted project; with the template's GPU request the container asks for NVIDIA GPUs."""
    import json

    from harness.prefect_server import PrefectServer

    assert training_image.attrs["Config"]["User"] == "trainer"
    project = tmp_path / "project"
    (project / "pdfs").mkdir(parents=True)
    for pdf in sample_pdf_dir.glob("*.pdf"):
        (project / "pdfs" / pdf.name).write_bytes(pdf.read_bytes())
    write_profile(project, {"data_collector": {"local": {"dir": "/project/pdfs"}}}, inherit="/app/configs/local.yaml",
                  root="/project")  # as the container sees it
    os.chmod(project, 0o777)  # the container runs as uid 10001
    spec = tmp_path / "prefect.yaml"
    spec.write_text(json.dumps({
        "name": "containers-test", "prefect-version": "3.9.1",
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}],
        "deployments": [{"name": "in-container", "entrypoint": "flows/deployments.py:data_refresh",
                         "parameters": {"config": "/project/config.yaml"},
                         "work_pool": {"name": "test-docker", "job_variables": {
                             "image": "domain-llm-train:latest", "image_pull_policy": "Never", "network_mode": "host",
                             "volumes": [f"{project}:/project"]}}}]}))

    with PrefectServer(tmp_path / "prefect") as server:
        env = {**server.env, "DOCKER_HOST": docker_host}

        def prefect(*args: str) -> str:
            result = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], cwd=REPO, env=env,
                                    capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, f"prefect {' '.join(args)}: {result.stdout[-2000:]} {result.stderr[-2000:]}"
            return result.stdout

        prefect("work-pool", "create", "test-docker", "--type", "docker",
                "--base-job-template", str(REPO / "deployments/gpu-docker-pool.json"))
        prefect("deploy", "--prefect-file", str(spec), "--name", "in-container")
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "test-docker",
                                   "--type", "docker"], cwd=REPO, env={**env, **POLLING_WORKER}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            def run(*extra: str) -> dict:
                out = prefect("deployment", "run", "data-refresh/in-container", *extra)
                run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    flow_run = httpx.get(f"{server.api_url}/flow_runs/{run_id}", timeout=10).json()
                    if flow_run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                        return flow_run
                    time.sleep(2)
                raise AssertionError(f"flow run {run_id} not finished in 600 s: {flow_run['state']}")

            # no GPU here: this run drops the template's GPU request, as a CPU host would
            done = run("--job-variable", "container_create_kwargs={}")
            assert done["state_type"] == "COMPLETED", done["state"]
            # the stage summaries are logged by the stage subflows, children of this run
            logs = httpx.post(f"{server.api_url}/logs/filter", json={"limit": 200}, timeout=10).json()
            assert any(log["message"].startswith("generate: ") for log in logs)
            assert any(log["flow_run_id"] == done["id"] for log in logs)
            stats = json.loads((project / "data/qa_dataset/stats.json").read_text())
            assert stats["pairs"] > 0 and len(stats["source_documents"]) == len(list(sample_pdf_dir.glob("*.pdf")))

            # the pool's own defaults: every NVIDIA GPU and a 16 GB /dev/shm are requested of the engine
            gpu = run()
            assert gpu["state_type"] in ("CRASHED", "FAILED")
            created = docker_client.containers.list(all=True, filters={"name": gpu["name"]})
            assert created, [(c.name, c.labels) for c in docker_client.containers.list(all=True)]
            host_config = created[0].attrs["HostConfig"]
            assert host_config["DeviceRequests"][0]["Driver"] == "nvidia"
            assert host_config["DeviceRequests"][0]["Count"] == -1
            assert host_config["ShmSize"] == 16 * 1024**3
        finally:
            os.killpg(worker.pid, 15)
            worker.wait(timeout=30)
            for container in docker_client.containers.list(all=True):
                if container.image.id == training_image.id:
                    container.remove(force=True)
