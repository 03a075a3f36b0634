"""Projects as a user makes them and pipeline.py as a user runs it, for tests and benchmarks alike."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
LOCAL_PROFILE = REPO / "configs" / "local.yaml"
# registration.exports for a test whose subject is not stage 5's exports (those: tests/test_llamacpp.py); such a project
# also sets serving.backend: local, llama.cpp serving the GGUF exports it would not have
NO_EXPORTS = {"merged": False, "gguf": [], "ollama": False}


@dataclass(frozen=True)
class Ran:
    """A project and the pipeline run that brought it there (its output is what the tests read)."""

    root: Path
    result: subprocess.CompletedProcess[str]


def write_profile(folder: Path, settings: dict | None = None, *, name: str = "config.yaml",
                  inherit: Path | str = LOCAL_PROFILE, root: str | None = ".") -> Path:
    """``folder/name``: a config inheriting ``inherit`` (the offline profile unless told), its relative paths
    taken from ``root`` (relative to the file; None: the inherited root), with ``settings`` on top."""
    values = {"inherit": str(inherit), **({"root": root} if root is not None else {}), **(settings or {})}
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return path


def copy_project(source: Path, folder: Path, settings: dict | None = None) -> Path:
    """``folder`` (returned) with ``source``'s data and its config.yaml inheriting ``source``'s, ``settings`` on top:
    a project that continues where ``source`` stopped, as a second clone of it would."""
    shutil.copytree(source / "data", folder / "data")
    write_profile(folder, settings, inherit=source / "config.yaml")
    return folder


def copy_whole(source: Path, folder: Path) -> Path:
    """``folder`` (returned) as a whole copy of the project ``source`` (models and reports too), for a test that
    changes it; logs, and files being written there now, are left out. Unlike copy_project it keeps the paths its
    files name (a rerun of 4b there would train again: its run is named by the base model's path)."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".*.tmp", "logs", ".built", ".stdout", ".stderr"),
                    dirs_exist_ok=True)
    return folder


def without_prefect_server() -> dict[str, str]:
    """This process's environment without PREFECT_API_URL: pipeline.py starts Prefect's temporary server, as on a
    first run with no server configured (the test session otherwise shares one: tests/conftest.py)."""
    return {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}


def run_pipeline(config: Path, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``python pipeline.py --config CONFIG ARGS`` from the config's folder, output captured.

    ``env``: the whole environment (default: this process's); output is unbuffered either way.
    """
    return subprocess.run([sys.executable, str(REPO / "pipeline.py"), "--config", config.name, *args],
                          cwd=config.parent, capture_output=True, text=True, timeout=timeout,
                          env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"})


def qa_dataset(folder: Path) -> dict[str, list[dict]]:
    """Stage 3's records, by side: train, validation, test."""
    return {side: json.loads((folder / f"{side}.json").read_text()) for side in ("train", "validation", "test")}


def rollout_project(root: Path, name: str, serving: dict, **sections: dict) -> Path:
    """A project in ``root`` (returned) whose stage 5 registered ``name`` and whose 4d measured five answers,
    ready for stage 6; its config.yaml sets ``serving`` and ``sections`` on the offline profile.

    A fake vLLM never answers as 4d did, so its parity gate is measured and reported but given a margin
    (``parity_margin: 1``: the combined score cannot drop by more) that never rolls back; the real engine's
    tests (tests/test_vllm_engine.py) hold the gate to the profile's margin.
    """
    from core.config import load_config
    from tasks.common.base_models import model_ref

    reports = root / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "registration.json").write_text(json.dumps({
        "status": "registered", "name": name, "target": "local", "location": str(root / "models/registry" / name),
        "adapter_sha256": "0" * 64}))
    evaluation = load_config(LOCAL_PROFILE).evaluation
    (reports / "eval_finetuned.json").write_text(json.dumps({
        "model": "base", "adapter": None, "examples": 5, "metrics": {"combined": 1.0},
        "settings": {"max_new_tokens": 64, "batch_size": 8, "system_prompt": "",
                     "bertscore_model": model_ref(evaluation.bertscore_model, "bertscore")},
        "weights": dict(evaluation.weights),
        "predictions": [{"id": f"q{i}", "question": f"What is item {i}?", "reference": f"Item {i} is a thing.",
                         "prediction": f"Item {i} is a thing.", "scores": {"combined": 1.0}} for i in range(5)]}))
    write_profile(root, {"serving": {"backend_registry_dir": "/models/registry", "smoke_questions": 3,
                                     "parity_questions": 3, "parity_margin": 1.0, **serving}, **sections})
    return root
