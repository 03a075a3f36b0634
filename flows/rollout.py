"""Stage 6 — rollout: put the registered adapter into service behind the running gateway, or keep the old one.

load beside the active adapter → smoke test it through the gateway (answers, differs from the
base model, same answers as 4d measured) → switch → unload the previous one once drained.
Any failure before the switch unloads the newcomer and leaves the previous adapter serving.
Requests keep flowing throughout: the switch is atomic in the gateway.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx

from flows.config import ConfigError, PipelineConfig, Secrets
from flows.report import say
from flows.threaded import threaded_flow
from tasks.files import atomic_write_json


class RolloutFailed(RuntimeError):
    """The new adapter did not pass; the previous one is still serving. The message says why."""


def _client(config: PipelineConfig) -> httpx.Client:
    token = Secrets().api_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    return httpx.Client(base_url=config.serving.gateway_url, headers=headers,
                        timeout=config.serving.request_timeout_s + 30)


def _checked(response: httpx.Response, action: str) -> dict:
    if response.status_code >= 400:
        detail = response.json().get("detail") if "json" in response.headers.get("content-type", "") else response.text
        raise RolloutFailed(f"{action}: gateway answered {response.status_code}: {detail}")
    return response.json()


def adapter_source(config: PipelineConfig, registration: dict) -> str:
    """What the backend loads: the Hub repo id, or the local registry folder as the backend sees it."""
    if registration["target"] == "hub":
        return registration["location"].rstrip("/").split("/", 3)[-1]
    folder = config.serving.backend_registry_dir
    return f"{folder.rstrip('/')}/{registration['name']}" if folder else registration["location"]


def smoke_test(client: httpx.Client, config: PipelineConfig, name: str, base_model: str, backend: str,
               eval_report: dict) -> dict:
    """Replay 4d's first questions through the gateway on the new adapter and on the base model."""
    sample = eval_report["predictions"][: config.serving.smoke_questions]
    asked = {"max_tokens": eval_report["settings"]["max_new_tokens"], "temperature": 0.0}
    new, base = [], []
    for example in sample:
        new.append(_checked(client.post("/ask", json={"question": example["question"], "adapter": name, **asked}),
                            f"smoke test of {name}")["answer"])
        base.append(_checked(client.post("/ask", json={"question": example["question"], "adapter": base_model, **asked}),
                             "smoke test of the base model")["answer"])
    empty = sum(not answer.strip() for answer in new)
    differs = sum(a.strip() != b.strip() for a, b in zip(new, base, strict=True))
    agree = sum(a.strip() == e["prediction"].strip() for a, e in zip(new, sample, strict=True))
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


@threaded_flow("rollout")
def rollout(config: PipelineConfig, skip_without_gateway: bool = False) -> dict:
    """``skip_without_gateway``: a full pipeline run on a machine with no gateway running skips (and says so)."""
    reports = config.path(config.paths.reports)
    registration_file, eval_file = reports / "registration.json", reports / "eval_finetuned.json"
    for needed, stage in ((registration_file, "5"), (eval_file, "4d")):
        if not needed.is_file():
            raise ConfigError(f"stage 6 needs {needed}: run stage {stage} first")
    registration = json.loads(registration_file.read_text(encoding="utf-8"))
    eval_report = json.loads(eval_file.read_text(encoding="utf-8"))
    name = registration["name"]
    record: dict = {"adapter": name, "gateway": config.serving.gateway_url,
                    "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    with _client(config) as client:
        try:
            models = _checked(client.get("/models"), "reading the gateway's models")
        except httpx.TransportError as error:
            if skip_without_gateway:
                say(f"6 rollout: skipped, no gateway at {config.serving.gateway_url} (start one with "
                    "scripts/run_pipeline.sh --serve-local, then run --stage 6)")
                return {"status": "skipped", "reason": "no gateway running"}
            raise RolloutFailed(f"the gateway at {config.serving.gateway_url} is unreachable ({type(error).__name__}): "
                                "start it (scripts/run_pipeline.sh --serve or --serve-local)") from None
        previous, backend, base_model = models["active_adapter"], models["backend"], models["base_model"]
        record.update(previous=previous, backend=backend)
        if previous == name:
            record.update(status="already_active")
            _finish(reports, record)
            say(f"6 rollout: {name} is already the active adapter")
            return record
        loaded_here = name not in models["loaded"]
        try:
            if loaded_here:
                _checked(client.post("/admin/adapters", json={"name": name, "path": adapter_source(config, registration)}),
                         f"loading {name}")
            record["smoke_test"] = smoke_test(client, config, name, base_model, backend, eval_report)
            _checked(client.put("/admin/active", json={"name": name}), f"switching to {name}")
        except (RolloutFailed, httpx.TransportError) as error:
            if loaded_here:
                with contextlib.suppress(httpx.TransportError):  # the gateway itself failed: nothing to unload
                    client.delete(f"/admin/adapters/{name}")
            record.update(status="rolled_back", error=str(error), active=previous)
            _finish(reports, record)
            raise RolloutFailed(f"{error}; {previous or 'the base model'} is still serving") from None
        if previous and previous != base_model:
            _checked(client.delete(f"/admin/adapters/{previous}"), f"unloading {previous}")
        record.update(status="switched", active=name)
    _finish(reports, record)
    smoke = record["smoke_test"]
    say(f"6 rollout: {previous or 'base model'} → {name} on {backend}; smoke test {smoke['questions']} questions, "
        f"{smoke['differs_from_base']} differ from base, agreement with 4d {smoke['agreement_with_4d']:.0%}")
    return record


def _finish(reports: Path, record: dict) -> None:
    record["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    atomic_write_json(reports / "rollout.json", record)
