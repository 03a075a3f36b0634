"""Greedy answers from a base model, optionally with a LoRA adapter, exactly as serving builds prompts.

Batched with left padding (decoder-only models continue from the right edge), through the
model's own chat template, with the shared ANSWER STYLE system prompt.
"""

from __future__ import annotations

from pathlib import Path

import torch


def load_model(base: str, adapter: Path | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, tokenizer


def chat_prompt(tokenizer, system: str, question: str) -> str:
    return tokenizer.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": question}],
                                         tokenize=False, add_generation_prompt=True)


@torch.inference_mode()
def generate_answers(model, tokenizer, questions: list[str], system: str, max_new_tokens: int,
                     batch_size: int) -> list[str]:
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        prompts = [chat_prompt(tokenizer, system, q) for q in questions[start:start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        answers.extend(text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return answers
