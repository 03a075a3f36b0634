"""LoRA / QLoRA supervised fine-tuning with TRL's SFTTrainer and PEFT.

Examples are conversational prompt/completion pairs (system + user → assistant), so the
loss is computed on the assistant's answer only. Batches are padding-free (the examples of a
batch are laid end to end, kept apart by their position ids), so no step computes on padding.
Checkpoints hold only the adapter; a run interrupted midway resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.config import Finetuning
from core.files import atomic_write_json
from core.naming import checkpoint_step


def checkpoints(folder: Path) -> list[Path]:
    """Checkpoint folders in step order."""
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and checkpoint_step(p.name) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p.name))


def discard_incomplete(folder: Path) -> list[str]:
    """Remove the checkpoint folders a crash left half-written, before 4b resumes: the trainer writes
    ``trainer_state.json`` last, so a folder without it was cut short (the next save of that step writes it whole)."""
    cut = [p for p in checkpoints(folder) if not (p / "trainer_state.json").is_file()]
    for checkpoint in cut:
        shutil.rmtree(checkpoint)
    return [p.name for p in cut]


def to_prompt_completion(record: dict) -> dict:
    system, user, assistant = record["messages"]
    return {"prompt": [system, user], "completion": [assistant]}


def total_steps(n_examples: int, settings: Finetuning) -> int:
    t = settings.training
    if t.strategy == "steps":
        return t.max_steps
    per_epoch = math.ceil(n_examples / (t.batch_size * t.gradient_accumulation_steps))
    return max(1, math.ceil(per_epoch * t.epochs))


def _load_model(base: str, settings: Finetuning):
    import torch
    from transformers import AutoModelForCausalLM

    t = settings.training
    if settings.quantization == "none":
        return AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16 if t.bf16 else torch.float32)
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quantization = (BitsAndBytesConfig(load_in_8bit=True) if settings.quantization == "8bit" else
                    BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                       bnb_4bit_compute_dtype=torch.bfloat16 if t.bf16 else torch.float32))
    model = AutoModelForCausalLM.from_pretrained(base, quantization_config=quantization)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=t.gradient_checkpointing)


def within_length(records: list[dict], tokenizer, max_seq_length: int) -> tuple[list[dict], int]:
    """Keep the examples whose whole conversation fits max_seq_length; return them and how many were dropped.

    Padding-free batching never truncates, and a truncated example would train on an answer cut mid-sentence,
    so an overlong example is left out and counted instead.
    """
    kept = [r for r in records if len(tokenizer.apply_chat_template(r["messages"], tokenize=True)["input_ids"]) <= max_seq_length]
    return kept, len(records) - len(kept)


def _progress_callback(on_step: Callable[[int, int, float | None], None]):
    """The trainer's progress and its logged losses as ``on_step(step, max_steps, loss)``, instead of the
    trainer's own bar and printed ``{'loss': …}`` lines."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            on_step(state.global_step, state.max_steps, None)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                on_step(state.global_step, state.max_steps, logs["loss"])

    return Progress()


def build_trainer(base: str, train_chat: Path, output_dir: Path, settings: Finetuning,
                  on_step: Callable[[int, int, float | None], None]):
    import torch
    from datasets import Dataset
    from peft import LoraConfig

    # with WANDB_MODE=offline, transformers prints "[INFO] Running in WANDB offline mode" when its trainer
    # integrations are first imported; 4b's own line says where the offline run went
    with contextlib.redirect_stdout(io.StringIO()):
        from transformers import AutoTokenizer, PrinterCallback, ProgressCallback
        from trl import SFTConfig, SFTTrainer

    t = settings.training
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by the launcher (tasks.finetune.launch)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    records = [json.loads(line) for line in train_chat.read_text(encoding="utf-8").splitlines() if line.strip()]
    records, too_long = within_length(records, tokenizer, t.max_seq_length)
    if not records:
        raise ValueError(f"{train_chat} has no training examples of at most finetuning.training.max_seq_length="
                         f"{t.max_seq_length} tokens ({too_long} longer ones; run stage 3 first or raise it)")
    dataset = Dataset.from_list([to_prompt_completion(r) for r in records])
    steps = total_steps(len(records), settings)
    args = SFTConfig(
        output_dir=str(output_dir), num_train_epochs=t.epochs, max_steps=steps,
        # the configured batch is the global one: N processes each accumulate 1/N of its steps
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps // processes,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler,
        warmup_steps=math.ceil(steps * t.warmup_ratio), weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm, max_length=None, padding_free=True, optim=t.optim,
        # transformers refuses bf16 without an accelerator unless told the CPU is meant (preflight checked it can)
        # and processes launched on a CPU machine must be told so too, or they do not form a (gloo) group
        bf16=t.bf16, use_cpu=(t.bf16 or processes > 1) and not torch.cuda.is_available(),
        gradient_checkpointing=t.gradient_checkpointing, save_strategy="steps",
        save_steps=t.save_steps, logging_steps=t.logging_steps,
        seed=t.seed, data_seed=t.seed, report_to=["wandb"] if settings.wandb else "none",
        run_name=settings.wandb_run_name,
        completion_only_loss=True, save_only_model=False, disable_tqdm=True,
    )
    lora = LoraConfig(r=settings.lora.r, lora_alpha=settings.lora.alpha, lora_dropout=settings.lora.dropout,
                      target_modules=list(settings.lora.target_modules), task_type="CAUSAL_LM", bias="none")
    trainer = SFTTrainer(model=_load_model(base, settings), args=args, train_dataset=dataset,
                         processing_class=tokenizer, peft_config=lora)
    for printer in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(printer)
    trainer.add_callback(_progress_callback(on_step))
    return trainer, too_long


def run_training(base: str, train_chat: Path, output_dir: Path, settings: Finetuning, log_path: Path,
                 on_step: Callable[[int, int, float | None], None] = lambda step, steps, loss: None) -> dict:
    """Train (resuming from the last checkpoint if there is one); returns the loss history and checkpoints.

    The same in one process and in each of several (``tasks.finetune.launch``): the trainer shares the work out,
    saves checkpoints from the main process only, and only the main process writes ``log_path``.
    """
    trainer, too_long = build_trainer(base, train_chat, output_dir, settings, on_step)
    resume = checkpoints(output_dir)
    result = trainer.train(resume_from_checkpoint=str(resume[-1]) if resume else None)
    trainer.save_state()
    history = [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e]
    summary = {"steps": trainer.state.global_step, "train_loss": result.training_loss,
               "loss_history": history, "resumed_from": resume[-1].name if resume else None,
               "checkpoints": [p.name for p in checkpoints(output_dir)], "examples_too_long": too_long,
               "processes": trainer.args.world_size, "train_runtime_s": result.metrics["train_runtime"]}
    if trainer.is_world_process_zero():
        atomic_write_json(log_path, summary)
    return summary


@task(name="train-lora", cache_policy=NO_CACHE)
def train_lora(base: str, train_chat: Path, output_dir: Path, settings: Finetuning, log_path: Path,
               on_step: Callable[[int, int, float | None], None] = lambda step, steps, loss: None) -> dict:
    """4b's training, in this process or, with ``finetuning.distributed.num_processes`` above 1, in that many
    launched by accelerate; returns the loss history and checkpoints.

    ``on_step(step, max_steps, loss)`` follows progress (``loss`` is None between logging steps); each logged
    loss goes to the run log too (the Prefect UI; the console with ``--verbose``).
    """
    logger = get_run_logger()

    def report(step: int, steps: int, loss: float | None) -> None:
        on_step(step, steps, loss)
        if loss is not None:
            logger.info("4b step %d/%d: loss %.4f", step, steps, loss)

    if cut := discard_incomplete(output_dir):
        logger.warning("4b: removed half-written checkpoints %s (a run was stopped while saving them)", ", ".join(cut))
    if settings.distributed.processes() == 1:
        return run_training(base, train_chat, output_dir, settings, log_path, report)
    from tasks.finetune.launch import launch_training

    return launch_training(base, train_chat, output_dir, settings, log_path, report)


def trained_said(summary: dict, settings: Finetuning, run_where: str | None) -> str:
    """4b's line: the steps and loss, the checkpoints, what was resumed or left out, where the run is tracked."""
    if not summary:
        d = settings.distributed
        return (f"4b train: machine {d.machine_rank} of {d.num_machines} trained its share; machine 0 holds the "
                "checkpoints and the log (run 4c and 4d there)")
    losses = [h["loss"] for h in summary["loss_history"]]
    loss = (f"loss {losses[0]:.3f} → {losses[-1]:.3f}" if losses else  # a run shorter than one logging interval
            f"no loss logged (training.logging_steps {settings.training.logging_steps} > its steps)")
    return (f"4b train: {summary['steps']} steps, {loss}, "
            f"checkpoints {', '.join(summary['checkpoints'])}"
            + (f" (resumed from {summary['resumed_from']})" if summary["resumed_from"] else "")
            + (f"; {summary['examples_too_long']} examples over max_seq_length left out" if summary["examples_too_long"] else "")
            + (f"; W&B run {run_where}" if run_where else "")
            + (f"; {summary['processes']} processes ({settings.distributed.strategy})" if summary["processes"] > 1 else ""))
