"""One process of a distributed 4b run: ``accelerate launch … -m tasks.finetune.worker SPEC`` (tasks.finetune.launch).

Reads what to train from SPEC (the launcher writes it), runs 4b's own ``run_training``, and,
on rank 0 only, prints a progress line per step for the launcher to read.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from core.config import Finetuning
from tasks.finetune.launch import PROGRESS
from tasks.finetune.train import run_training


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    main_process = int(os.environ.get("RANK", "0")) == 0

    def report(step: int, steps: int, loss: float | None) -> None:
        if main_process:
            print(PROGRESS + json.dumps([step, steps, loss]), flush=True)

    run_training(spec["base"], Path(spec["train_chat"]), Path(spec["output_dir"]),
                 Finetuning.model_validate(spec["settings"]), Path(spec["log_path"]), report)


if __name__ == "__main__":
    main(sys.argv[1])
