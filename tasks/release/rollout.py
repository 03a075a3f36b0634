"""Stage 6's steps: put a registered adapter into service, or leave the previous one serving.

Two ways (``serving.rollout``), each returning the rollout record with its status: ``switched``,
``already_active``, ``rolled_back`` (with the error; the previous adapter still serves) or
``skipped`` (nothing to roll out onto). See flows/rollout.py for the order of the steps.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from core.config import EVALUATION_DTYPE, ConfigError, PipelineConfig, Secrets
from core.gateway import config_admin_token, exposure_error, hub_id, settings_environment, settings_from_config
from core.naming import version_label
from core.results import EvaluationReport, Prediction, Registration, Rollout
from tasks.common.paired import Paired
from tasks.release import containers
from tasks.release.containers import ContainerError
from tasks.release.parity import measure, parity_sample, significantly_worse


class RolloutFailed(RuntimeError):
    """The new adapter did not pass; the previous one is still serving. The message says why."""


def _client(config: PipelineConfig, url: str | None = None) -> httpx.Client:
    """A client for /ask and /models (API_TOKEN); admin calls add ``headers=admin_auth(config)``."""
    token = Secrets().api_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    return httpx.Client(base_url=url or config.serving.gateway_url, headers=headers,
                        timeout=config.serving.request_timeout_s + 30)


def admin_token(config: PipelineConfig) -> str:
    """The token the gateway's /admin takes (core.gateway.config_admin_token), else API_TOKEN; with neither, the
    token file is made here, as `python -m serving --config` makes it."""
    api = Secrets().api_token
    return (config_admin_token(config, make=api is None) or api).get_secret_value()


def admin_auth(config: PipelineConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(config)}"}


def _checked(response: httpx.Response, action: str) -> dict:
    if response.status_code >= 400:
        detail = response.json().get("detail") if "json" in response.headers.get("content-type", "") else response.text
        raise RolloutFailed(f"{action}: gateway answered {response.status_code}: {detail}")
    return response.json()


def admin_source(registration: Registration) -> str:
    """How the admin API names it: the Hub repo id, or its folder's name in the gateway's registry."""
    return hub_id(registration) if registration.target == "hub" else registration.name


def skipped(why: str) -> dict:
    """Nothing to roll out onto (no gateway, no Docker, no vLLM): the flow decides whether that is an error."""
    return {"status": "skipped", "reason": why}


def smoke_test(client: httpx.Client, config: PipelineConfig, name: str, base_model: str, backend: str,
               eval_report: EvaluationReport) -> dict:
    """Replay 4d's first questions through the gateway on the new adapter and on the base model."""
    sample = eval_report.predictions[: config.serving.smoke_questions]
    asked = {"max_tokens": eval_report.settings.max_new_tokens, "temperature": 0.0}
    new, base = [], []
    for example in sample:
        new.append(_checked(client.post("/ask", json={"question": example.question, "adapter": name, **asked}),
                            f"smoke test of {name}")["answer"])
        base.append(_checked(client.post("/ask", json={"question": example.question, "adapter": base_model, **asked}),
                             "smoke test of the base model")["answer"])
    empty = sum(not answer.strip() for answer in new)
    differs = sum(a.strip() != b.strip() for a, b in zip(new, base, strict=True))
    agree = sum(a.strip() == e.prediction.strip() for a, e in zip(new, sample, strict=True))
    result = {"questions": len(sample), "empty_answers": empty, "differs_from_base": differs,
              "agreement_with_4d": agree / len(sample) if sample else None, "backend": backend}
    if empty:
        raise RolloutFailed(f"smoke test: {empty} of {len(sample)} answers from {name} are empty")
    if sample and differs == 0:
        raise RolloutFailed(f"smoke test: {name} answers exactly like the base model on all {len(sample)} questions")
    if backend == "local" and agree != len(sample):
        # same weights, prompt, template and greedy decoding as 4d: anything else is a serving mismatch
        raise RolloutFailed(f"smoke test: only {agree} of {len(sample)} answers match what 4d measured "
                            "(prompt or chat-template mismatch between evaluation and serving)")
    return result


PARITY_CONCURRENCY = 4  # requests in flight while the parity gate asks: the engine batches them, as it would serve them


def served_parity(client: httpx.Client, config: PipelineConfig, name: str, backend: str,
                  eval_report: EvaluationReport) -> dict:
    """4d's test questions (the first ``serving.parity_questions``) asked of ``name`` as served by ``backend`` (what
    the gateway reports, not what the config says: a gateway may be started with another), paired with 4d's answers
    (tasks.release.parity). Served answers differ from evaluated ones when the engine runs another dtype or applies
    other generation defaults; nothing else would notice."""
    s = config.serving
    sample = parity_sample(eval_report, s.parity_questions)
    asked = {"adapter": name, "max_tokens": eval_report.settings.max_new_tokens, "temperature": 0.0}

    def ask(example: Prediction) -> str:
        return _checked(client.post("/ask", json={"question": example.question, **asked}), f"parity gate on {name}")["answer"]

    with ThreadPoolExecutor(PARITY_CONCURRENCY) as pool:
        served = list(pool.map(ask, sample))
    computed_in = f"gguf-{s.gguf}" if backend == "llamacpp" else s.dtype  # llama.cpp runs the GGUF's types
    return {**measure(served, sample, config.evaluation, eval_report, "served"), "dtype": computed_in,
            "margin": s.parity_margin}


def check_parity(parity: dict) -> str | None:
    """RolloutFailed when the served adapter scores significantly worse than 4d measured (the interval's upper bound
    below ``-parity_margin``); a warning when only some answers differ."""
    change = Paired.model_validate(parity["combined"])
    if significantly_worse(parity, parity["margin"]):
        fix = (f"serve a GGUF type nearer 4d's {EVALUATION_DTYPE} (serving.gguf: f32 or f16, now "
               f"{parity['dtype'].removeprefix('gguf-')}; stage 5's exports measure each type)"
               if parity["dtype"].startswith("gguf-") else
               f"serve in the dtype 4d evaluated in (serving.dtype: {EVALUATION_DTYPE}, now {parity['dtype']})"
               if parity["dtype"] != EVALUATION_DTYPE else
               "the weights served are not the ones 4d evaluated, or the engine decodes otherwise (vLLM: "
               "--generation-config vllm)")
        raise RolloutFailed(f"parity gate: {parity['headline']}: served worse than evaluated by more than "
                            f"serving.parity_margin ({parity['margin']:g}); {fix}")
    if parity["identical"] < change.examples:
        return (f"{change.examples - parity['identical']} of {change.examples} served answers differ from 4d's "
                f"(computed in {parity['dtype']}); reports/rollout.json lists some")
    return None


def verified(client: httpx.Client, config: PipelineConfig, name: str, eval_report: EvaluationReport, record: dict) -> dict:
    """The active version's parity with 4d (a gateway that loaded it at start, a rerun): status ``already_active``,
    or ``parity_failed`` (nothing to roll back to: the flow fails with the reason)."""
    record["parity"] = served_parity(client, config, name, record["backend"], eval_report)
    try:
        record["warning"] = check_parity(record["parity"])
    except RolloutFailed as error:
        return {**record, "status": "parity_failed", "error": str(error), "active": name}
    return {**record, "status": "already_active", "active": name}


def in_gateway(config: PipelineConfig, registration: Registration, eval_report: EvaluationReport, record: dict) -> dict:
    """Load beside the active adapter → smoke test → parity gate → switch → unload the previous one; any failure
    before the switch unloads the newcomer (status rolled_back). The active version itself is only verified."""
    name = registration.name
    with _client(config) as client:
        try:
            models = _checked(client.get("/models"), "reading the gateway's models")
        except httpx.TransportError as error:
            return skipped(f"the gateway at {config.serving.gateway_url} is unreachable ({type(error).__name__}): "
                           "start it (scripts/run_pipeline.sh --serve-local)")
        # what the backend has loaded, not what a gateway was told: the gateway reports an active adapter only when
        # its backend lists it (a vLLM restarted under a running gateway has lost its adapters)
        previous, backend, base_model = models["active_adapter"], models["backend"], models["base_model"]
        record.update(previous=previous, backend=backend)
        if previous == name:  # nothing to switch: still check that what is served is what 4d evaluated
            return verified(client, config, name, eval_report, record)
        loaded_here, admin = name not in models["loaded"], admin_auth(config)
        try:
            if loaded_here:
                _checked(client.post("/admin/adapters", json={"name": name, "source": admin_source(registration)},
                                     headers=admin), f"loading {name}")
            record["smoke_test"] = smoke_test(client, config, name, base_model, backend, eval_report)
            record["parity"] = served_parity(client, config, name, backend, eval_report)
            record["warning"] = check_parity(record["parity"])
            _checked(client.put("/admin/active", json={"name": name}, headers=admin), f"switching to {name}")
        except (RolloutFailed, httpx.TransportError) as error:
            if loaded_here:
                with contextlib.suppress(httpx.TransportError):  # the gateway itself failed: nothing to unload
                    client.delete(f"/admin/adapters/{name}", headers=admin)
            return {**record, "status": "rolled_back", "error": str(error), "active": previous}
        if previous and previous != base_model:
            _checked(client.delete(f"/admin/adapters/{previous}", headers=admin), f"unloading {previous}")
    return {**record, "status": "switched", "active": name}


def blue_green(config: PipelineConfig, registration: Registration, eval_report: EvaluationReport, record: dict) -> dict:
    """A new gateway container beside the old one → ready → smoke test → parity gate → the edge switches → the old
    one stops once drained; any failure before the switch removes the newcomer (status rolled_back)."""
    s, name = config.serving, registration.name
    if why := exposure_error(s.host, Secrets().api_token is not None, s.allow_unauthenticated):
        raise ConfigError(f"stage 6, the edge on serving.host: {why}")
    try:
        client = containers.connect(s.docker_host)
    except ContainerError as error:
        return skipped(str(error))
    try:  # vLLM holds the loaded adapters: asked directly, an old gateway that lost it cannot stop a rollout
        reply = httpx.get(f"{s.vllm_url.rstrip('/')}/v1/models", timeout=5).raise_for_status()
        in_vllm = {model["id"] for model in reply.json()["data"]}
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
        return skipped(f"vLLM at {s.vllm_url} is not serving ({type(error).__name__}): start it "
                       "(scripts/run_pipeline.sh --serve)")
    gateway_image, edge_image = containers.image(client, s.gateway_image), containers.image(client, s.edge_image)
    edge = containers.find_edge(client, s.host, s.port)
    old = containers.running_gateways(client).get(containers.served_port(edge)) if edge else None
    previous = old.adapter if old else None
    record.update(previous=previous, backend="vllm", image=s.gateway_image)
    if old and old.adapter == name and old.container.image.id == gateway_image.id:
        with _client(config, old.url) as direct:
            return verified(direct, config, name, eval_report, {**record, "container": old.name})
    port = s.container_ports[1] if old and old.port == s.container_ports[0] else s.container_ports[0]
    containers.clear_for(client, port, keep=old)
    loaded_before = old is not None and name in in_vllm
    started = time.perf_counter()
    timings = record["timings_s"] = {}

    def lap(step: str) -> None:
        timings[step] = round(time.perf_counter() - started - sum(timings.values()), 3)

    new = containers.start_gateway(client, gateway_image, name, version_label(name), port,
                                   _gateway_environment(config), _gateway_tokens(config))
    record["container"] = new.name
    switching = created_edge = False
    try:
        containers.wait_ready(new, s.container_ready_timeout_s)
        lap("start_and_ready")
        with _client(config, new.url) as direct:
            base_model = _checked(direct.get("/models"), f"reading {new.name}'s models")["base_model"]
            record["smoke_test"] = smoke_test(direct, config, name, base_model, "vllm", eval_report)
            lap("smoke_test")
            record["parity"] = served_parity(direct, config, name, "vllm", eval_report)
            record["warning"] = check_parity(record["parity"])
        lap("parity_gate")
        if edge is None:
            edge, created_edge = containers.start_edge(client, edge_image, s.host, s.port, port,
                                                       s.request_timeout_s + 30), True
            containers.wait_edge(edge, s.gateway_url, port, 60)
        else:
            switching = True
            containers.switch_edge(edge, s.gateway_url, port, s.drain_timeout_s)
    except (RolloutFailed, ContainerError, httpx.TransportError) as error:
        if switching and old is not None:  # the edge may have moved: send it back before the newcomer goes
            with contextlib.suppress(ContainerError):
                containers.switch_edge(edge, s.gateway_url, old.port, s.drain_timeout_s)
        if created_edge:
            edge.remove(force=True)
        if not loaded_before:
            _unload_from(config, new.url, name, config.finetuning.base_model)
        new.container.stop(timeout=10)  # kept for `docker logs` until the next rollout
        return {**record, "status": "rolled_back", "error": str(error), "active": previous}
    lap("switch_and_drain")
    if old is not None:
        old.container.stop(timeout=int(s.drain_timeout_s))  # SIGTERM: it finishes what it serves
        if previous != name:
            _unload_from(config, new.url, previous, None)
    lap("stop_old")
    return {**record, "status": "switched", "active": name, "port": port}


def _gateway_environment(config: PipelineConfig) -> dict[str, str]:
    """The gateway container's settings: the ones `python -m serving --config` would use (the gateway loads the
    registered version at start)."""
    environment = settings_environment(settings_from_config(config, "vllm"))  # the registered version, as vLLM sees it
    for host_only in ("LOGS_DIR", "API_TOKEN_FILE", "ADMIN_TOKEN_FILE"):  # the container has its own
        environment.pop(f"GATEWAY_{host_only}", None)
    return environment


def _gateway_tokens(config: PipelineConfig) -> dict[str, str]:
    """What the container gets as files: API_TOKEN when set, and always an admin token (stage 6 unloads through it)."""
    api = Secrets().api_token
    return {**({"API_TOKEN": api.get_secret_value()} if api else {}), "ADMIN_TOKEN": admin_token(config)}


def _unload_from(config: PipelineConfig, url: str, adapter: str, switch_to: str | None) -> None:
    """Best effort: an adapter left loaded in vLLM costs memory, not correctness."""
    admin = admin_auth(config)
    with _client(config, url) as client, contextlib.suppress(httpx.TransportError):
        if switch_to:
            client.put("/admin/active", json={"name": switch_to}, headers=admin)
        client.delete(f"/admin/adapters/{adapter}", headers=admin)


def rollout_said(record: Rollout) -> list[str]:
    """The CLI lines of a finished rollout; RolloutFailed (exit 1) when the new version was not put into service."""
    if record.status == "rolled_back":
        raise RolloutFailed(f"{record.error}; {record.active or 'the base model'} is still serving"
                            + (f" (the new gateway's log: docker logs {record.container})" if record.container else ""))
    if record.status == "parity_failed":
        raise RolloutFailed(f"{record.error}; {record.adapter} is serving as it was (nothing to roll back to)")
    if record.status == "already_active":
        lines = [f"6 rollout: {record.adapter} is already the active adapter"]
    else:
        smoke, where = record.smoke_test or {}, f" in {record.container}" if record.container else ""
        lines = [f"6 rollout: {record.previous or 'base model'} → {record.adapter}{where} on {record.backend}; "
                 f"smoke test {smoke['questions']} questions, {smoke['differs_from_base']} differ from base"]
    return [*lines, f"6 parity: {(record.parity or {})['headline']}",
            *([f"6 parity warning: {record.warning}"] if record.warning else [])]
