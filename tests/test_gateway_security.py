"""The gateway locked down: who may call what, where it may listen, what it may load, what it tells."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.gateway import GatewaySettings
from harness.gateway import GatewayProcess, gateway_in_process
from harness.project import REPO, run_pipeline, write_profile
from serving.routes.admin import adapter_location, source_pattern
from tests.test_gateway import ADAPTER, BASE, gateway_env, vllm  # noqa: F401  (the fake vLLM fixture)

pytestmark = pytest.mark.e2e

API, ADMIN = "api-t0ken", "adm1n-t0ken"
CREDENTIALS = {"none": {}, "api": {"Authorization": f"Bearer {API}"}, "admin": {"Authorization": f"Bearer {ADMIN}"}}
ROUTES = {  # what each route is asked
    "health": ("GET", "/health", None), "metrics": ("GET", "/metrics", None), "models": ("GET", "/models", None),
    "ask": ("POST", "/ask", {"question": "What is lochia?"}), "admin list": ("GET", "/admin/adapters", None),
    "admin switch": ("PUT", "/admin/active", {"name": BASE}),
}
OPEN = {"health": 200, "metrics": 200, "models": 200}
# tokens the gateway has, where it listens → the status each route gives each credential (none / api / admin)
MATRIX = [
    ({}, "127.0.0.1", {**OPEN, "ask": (200, 200, 200), "admin list": (403, 403, 403), "admin switch": (403, 403, 403)}),
    ({"API_TOKEN": API}, "127.0.0.1",
     {**OPEN, "ask": (401, 200, 401), "admin list": (401, 200, 401), "admin switch": (401, 200, 401)}),
    ({"API_TOKEN": API, "ADMIN_TOKEN": ADMIN}, "127.0.0.1",
     {**OPEN, "ask": (401, 200, 401), "admin list": (401, 401, 200), "admin switch": (401, 401, 200)}),
    ({"ADMIN_TOKEN": ADMIN}, "127.0.0.1",
     {**OPEN, "ask": (200, 200, 200), "admin list": (401, 401, 200), "admin switch": (401, 401, 200)}),
    ({"API_TOKEN": API, "ADMIN_TOKEN": ADMIN}, "0.0.0.0",
     {**OPEN, "ask": (401, 200, 401), "admin list": (401, 401, 200), "admin switch": (401, 401, 200)}),
    ({"API_TOKEN": API}, "0.0.0.0",
     {**OPEN, "ask": (401, 200, 401), "admin list": (401, 200, 401), "admin switch": (401, 200, 401)}),
    ({"GATEWAY_ALLOW_UNAUTHENTICATED": "true"}, "0.0.0.0",
     {**OPEN, "ask": (200, 200, 200), "admin list": (403, 403, 403), "admin switch": (403, 403, 403)}),
]


@pytest.mark.parametrize("tokens, host, expected", MATRIX,
                         ids=[f"{'+'.join(t) or 'no token'}@{h}" for t, h, _ in MATRIX])
def test_auth_matrix(vllm, tmp_path, tokens, host, expected):  # noqa: F811
    with GatewayProcess(gateway_env(vllm.url, tmp_path, **tokens), args=("--host", host)) as gw:
        gw.wait_ready()
        seen = {}
        for route, (method, path, body) in ROUTES.items():
            statuses = tuple(httpx.request(method, f"{gw.url}{path}", json=body, headers=headers).status_code
                             for headers in CREDENTIALS.values())
            seen[route] = statuses[0] if route in OPEN and len(set(statuses)) == 1 else statuses
        assert seen == expected
        closed = httpx.put(f"{gw.url}/admin/active", json={"name": BASE})
        assert closed.status_code in (401, 403) and "token" in closed.json()["detail"].lower()
        # whatever was refused, the served model did not change
        assert httpx.get(f"{gw.url}/models").json()["active_adapter"] in (ADAPTER, None)


@pytest.mark.parametrize("host, env", [("0.0.0.0", {}), ("::", {}), ("192.0.2.10", {}),
                                       ("0.0.0.0", {"ADMIN_TOKEN": ADMIN})])  # an admin token leaves /ask open
def test_a_public_address_without_an_api_token_is_refused_with_the_fix(tmp_path, host, env):
    result = subprocess.run([sys.executable, "-m", "serving", "--host", host, "--port", "8999"], cwd=REPO,
                            env={"PATH": "/usr/bin:/bin", "GATEWAY_LOGS_DIR": str(tmp_path), **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: refusing to serve {host} without a token")
    assert "API_TOKEN" in line and "serving.allow_unauthenticated: true" in line and "127.0.0.1" in line


def test_the_default_config_listens_on_loopback_and_a_public_one_is_refused(tmp_path):
    public = write_profile(tmp_path, {"serving": {"host": "0.0.0.0"}}, name="public.yaml", root=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "serving", "--config", str(public)], cwd=REPO,
                            env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "refusing to serve 0.0.0.0 without a token" in result.stderr
    from core.config import load_config

    assert load_config(REPO / "config.yaml").serving.host == "127.0.0.1"
    assert load_config(REPO / "configs/local.yaml").serving.host == "127.0.0.1"


def test_stage_6_will_not_put_the_edge_on_a_public_address_without_a_token(tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/registration.json").write_text(json.dumps({
        "status": "registered", "name": "x-qa-lora-v1.0", "target": "local", "location": ".", "adapter_sha256": "0" * 64}))
    (tmp_path / "reports/eval_finetuned.json").write_text(json.dumps({
        "model": "base", "adapter": None, "examples": 0, "metrics": {}, "weights": {}, "predictions": [],
        "settings": {"max_new_tokens": 8, "batch_size": 1, "bertscore_model": "bertscore", "system_prompt": ""}}))
    config = write_profile(tmp_path, {"serving": {"host": "0.0.0.0", "rollout": "containers"}}, inherit=REPO / "config.yaml")
    result = run_pipeline(config, "--stage", "6", env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=300)
    assert result.returncode != 0 and "refusing to serve 0.0.0.0 without a token" in result.stderr


def test_tokens_come_from_files_and_a_missing_file_is_named(vllm, tmp_path):  # noqa: F811
    (tmp_path / "api").write_text(API + "\n")
    (tmp_path / "admin").write_text(ADMIN)
    env = gateway_env(vllm.url, tmp_path, API_TOKEN_FILE=str(tmp_path / "api"), ADMIN_TOKEN_FILE=str(tmp_path / "admin"))
    with GatewayProcess(env, args=("--host", "0.0.0.0")) as gw:  # a token from a file counts for a public address
        gw.wait_ready()
        assert httpx.post(f"{gw.url}/ask", json={"question": "Why?"}).status_code == 401
        assert httpx.post(f"{gw.url}/ask", json={"question": "Why?"}, headers=CREDENTIALS["api"]).status_code == 200
        assert httpx.get(f"{gw.url}/admin/adapters", headers=CREDENTIALS["admin"]).status_code == 200
    missing = subprocess.run([sys.executable, "-m", "serving"], cwd=REPO, capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin", "API_TOKEN_FILE": str(tmp_path / "nope")})
    assert missing.returncode != 0 and f"API_TOKEN_FILE names {tmp_path / 'nope'}, which cannot be read" in missing.stderr


@pytest.mark.parametrize("source", ["/etc/passwd", "../../etc", "..", ".", "a/../../b", "/models/registry/x",
                                    "x y", "owner/name/extra", "~root", ""])
def test_admin_loads_adapters_only_from_the_registry_or_the_hub(vllm, tmp_path, source):  # noqa: F811
    with gateway_in_process(gateway_env(vllm.url, tmp_path, ADMIN_TOKEN=ADMIN)) as gw:
        refused = gw.post("/admin/adapters", json={"name": "evil", "source": source},
                             headers=CREDENTIALS["admin"])
        assert refused.status_code == 422, refused.text
        assert "evil" not in vllm.adapters
        for name, good, loaded_from in (("v2", "pregnancy-qa-lora-v2.0", "/models/registry/pregnancy-qa-lora-v2.0"),
                                        ("hub", "someone/pregnancy-qa-lora-v2.1", "someone/pregnancy-qa-lora-v2.1")):
            ok = gw.post("/admin/adapters", json={"name": name, "source": good}, headers=CREDENTIALS["admin"])
            assert ok.status_code == 201 and vllm.adapters[name] == loaded_from
        again = gw.post("/admin/adapters", json={"name": "v2", "source": "x"}, headers=CREDENTIALS["admin"])
        assert again.status_code == 409 and "already loaded" in again.json()["detail"]


@given(st.text(max_size=60))
def test_no_source_leads_out_of_the_registry(source):
    """Whatever a client sends, what the backend is asked to load is a folder directly inside the registry, or a Hub
    id (vLLM), or nothing."""
    import re

    from fastapi.exceptions import RequestValidationError

    for backend in ("vllm", "local"):
        settings = GatewaySettings(backend=backend, adapter_registry="/srv/registry", logs_dir="/tmp")
        try:
            location = adapter_location(source, settings)
        except RequestValidationError:
            continue
        assert re.fullmatch(source_pattern(backend), source)
        if location.startswith("/"):
            parent, name = location.rsplit("/", 1)
            assert parent == "/srv/registry" and name not in ("", ".", "..")
        else:
            assert backend == "vllm" and location == source and ".." not in source.split("/")


def test_a_symlink_in_a_local_registry_does_not_lead_out(tmp_path):
    from fastapi.exceptions import RequestValidationError

    registry = tmp_path / "registry"
    (registry / "good").mkdir(parents=True)
    (registry / "escape").symlink_to(tmp_path)
    settings = GatewaySettings(backend="local", adapter_registry=str(registry), logs_dir=tmp_path)
    assert adapter_location("good", settings) == str(registry / "good")
    with pytest.raises(RequestValidationError, match="leads outside the adapter registry"):
        adapter_location("escape", settings)


def test_responses_name_models_never_host_paths(tmp_path):
    """The local backend loads from a folder on this machine; clients see the model's name only."""
    folder = tmp_path / "private" / "models" / "base"  # not a model: the warm-up fails, and says so without the path
    env = {"GATEWAY_BACKEND": "local", "GATEWAY_BASE_MODEL": "SmolLM2-135M-Instruct", "GATEWAY_BASE_MODEL_PATH":
           str(folder), "GATEWAY_LOGS_DIR": str(tmp_path / "logs"), "GATEWAY_ADAPTER_REGISTRY": str(tmp_path / "reg")}
    with GatewayProcess(env) as gw:
        for _ in range(100):
            ready = httpx.get(f"{gw.url}/ready")
            if ready.json()["warmup_error"]:
                break
            time.sleep(0.1)
        bodies = [ready.text, httpx.get(f"{gw.url}/models").text, httpx.get(f"{gw.url}/openapi.json").text,
                  httpx.post(f"{gw.url}/ask", json={"question": "Why?"}).text]
    assert ready.status_code == 503 and "SmolLM2-135M-Instruct" in ready.json()["warmup_error"]
    assert httpx.Response(200, text=bodies[1]).json()["base_model"] == "SmolLM2-135M-Instruct"
    for body in bodies:
        assert str(tmp_path) not in body and "private" not in body
    assert str(folder) in (tmp_path / "logs" / "api.log").read_text()  # the operator's log has it
