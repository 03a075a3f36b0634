"""4b on several processes: ``accelerate launch`` runs ``tasks.finetune.worker`` once per process.

One launcher for every strategy (DDP, FSDP, DeepSpeed ZeRO-3) and for one machine or several;
the training code inside is 4b's own (``run_training``), unchanged. On a machine without GPUs
the processes share the CPU through the gloo backend, which is how this path is tested here.
Only rank 0 reports progress (one line per step on its stdout, read here) and writes the log;
a rank that dies ends the whole run (torchrun's elastic agent stops the others) and its error
is raised here, with the tail of what the processes printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from core.config import Finetuning
from core.files import atomic_write_json

PROGRESS = "4b-progress "  # rank 0's progress lines: PROGRESS [step, steps, loss]
REPO = Path(__file__).resolve().parents[2]


def launch_command(spec: Path, settings: Finetuning, gpus: int) -> list[str]:
    """``accelerate launch`` for ``settings.distributed`` on a machine with ``gpus`` visible GPUs. (Its ``--cpu``
    would run one process: accelerate leaves several CPU processes to mpirun.)"""
    d = settings.distributed
    command = [sys.executable, "-m", "accelerate.commands.launch",
               "--num_processes", str(d.processes(gpus) * d.num_machines), "--num_machines", str(d.num_machines),
               "--machine_rank", str(d.machine_rank), "--main_process_port", str(d.main_process_port),
               "--mixed_precision", "no", "--dynamo_backend", "no"]
    if d.main_process_ip:
        command += ["--main_process_ip", d.main_process_ip]
    if d.strategy == "ddp":  # torchrun's path; on a CPU machine too, where the trainer then takes gloo
        command += ["--multi_gpu"]
    elif d.strategy == "fsdp":
        command += ["--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD",
                    "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_use_orig_params", "true",
                    "--fsdp_cpu_ram_efficient_loading", "true", "--fsdp_sync_module_states", "true"]
    elif d.strategy == "deepspeed_zero3":
        command += ["--use_deepspeed", "--zero_stage", "3"]
    return [*command, "-m", "tasks.finetune.worker", str(spec)]


def _failure(returncode: int, output: list[str]) -> str:
    """The first rank error in the processes' output (a Python exception line), else the exit code."""
    errors = [line.strip() for line in output if line[:1].isalpha() and ("Error:" in line or "Exception:" in line)]
    return errors[0] if errors else f"exit code {returncode}"


def launch_training(base: str, train_chat: Path, output_dir: Path, settings: Finetuning, log_path: Path,
                    on_step: Callable[[int, int, float | None], None]) -> dict:
    """Run ``run_training`` on ``settings.distributed``'s processes; the summary rank 0 wrote to ``log_path`` (on a
    machine other than the first, {}: its processes trained their share, and the first machine keeps the results)."""
    import torch

    output_dir.mkdir(parents=True, exist_ok=True)
    spec = output_dir / "launch.json"
    # the children train on the parent's behalf: W&B is logged by the parent's run (flows.finetune), not by each
    atomic_write_json(spec, {"base": base, "train_chat": str(train_chat), "output_dir": str(output_dir),
                             "log_path": str(log_path),
                             "settings": settings.model_copy(update={"wandb": False}).model_dump(mode="json")})
    log_path.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    output: deque[str] = deque(maxlen=400)
    # a session of its own: stopping 4b (Ctrl+C, a cancelled flow run) stops every process of the group
    process = subprocess.Popen(launch_command(spec, settings, torch.cuda.device_count()), cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    drain = threading.Thread(target=lambda: output.extend(process.stderr), daemon=True)
    drain.start()
    try:
        for line in process.stdout:
            if line.startswith(PROGRESS):
                on_step(*json.loads(line.removeprefix(PROGRESS)))
            else:
                output.append(line)
        returncode = process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        drain.join(timeout=10)
    if not returncode and settings.distributed.machine_rank > 0:
        return {}  # machine 0's rank 0 writes the checkpoints and the log
    if returncode or not log_path.is_file():
        tail = "".join(list(output)[-40:])
        raise RuntimeError(f"4b: distributed training failed ({_failure(returncode, list(output))}); "
                           f"the checkpoints saved before are kept, a rerun resumes from the last one. "
                           f"Last lines of the processes:\n{tail}")
    return json.loads(log_path.read_text(encoding="utf-8"))
