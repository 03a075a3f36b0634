"""Greedy answers from a base model, optionally with a LoRA adapter, exactly as serving builds prompts.

Batched with left padding (decoder-only models continue from the right edge), through the
model's own chat template, with the shared ANSWER STYLE system prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from core.config import EVALUATION_DTYPE


def load_model(base: str, adapter: Path | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, EVALUATION_DTYPE))
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, tokenizer


def chat_prompt(tokenizer, system: str, question: str) -> str:
    return tokenizer.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": question}],
                                         tokenize=False, add_generation_prompt=True)


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int


@torch.inference_mode()
def generate_batch(model, tokenizer, questions: list[str], system: str, max_new_tokens: int,
                   temperature: float = 0.0, max_time_s: float | None = None) -> list[Generation]:
    """One batch: greedy when temperature is 0 (evaluation, parity checks), sampled otherwise.
    ``max_time_s``: stop generating after that long (serving's request timeout)."""
    prompts = [chat_prompt(tokenizer, system, q) for q in questions]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    output = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, max_time=max_time_s, **sampling)
    new_tokens = output[:, batch["input_ids"].shape[1]:]
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    generated = (new_tokens != tokenizer.pad_token_id).sum(dim=1).tolist()
    prompt_lengths = batch["attention_mask"].sum(dim=1).tolist()
    return [Generation(text.strip(), int(n_prompt), int(n_new))
            for text, n_prompt, n_new in zip(texts, prompt_lengths, generated, strict=True)]


def generate_answers(model, tokenizer, questions: list[str], system: str, max_new_tokens: int,
                     batch_size: int) -> list[str]:
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        batch = generate_batch(model, tokenizer, questions[start:start + batch_size], system, max_new_tokens)
        answers.extend(g.text for g in batch)
    return answers
