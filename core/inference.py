"""Greedy answers from a base model, optionally with a LoRA adapter, exactly as serving builds prompts.

Batched with left padding (decoder-only models continue from the right edge), through the
model's own chat template, with the shared ANSWER STYLE system prompt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

from core.config import EVALUATION_DTYPE
from core.prompts import Messages, conversation


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


def chat_prompt(tokenizer, messages: Messages) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _sampling(temperature: float, top_p: float | None) -> dict:
    if temperature <= 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, **({"top_p": top_p} if top_p is not None else {})}


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int


@torch.inference_mode()
def generate_batch(model, tokenizer, conversations: list[Messages], max_new_tokens: int,
                   temperature: float = 0.0, max_time_s: float | None = None,
                   top_p: float | None = None) -> list[Generation]:
    """One batch: greedy when temperature is 0 (evaluation, parity checks), sampled otherwise.
    ``max_time_s``: stop generating after that long (serving's request timeout)."""
    prompts = [chat_prompt(tokenizer, messages) for messages in conversations]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    output = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, max_time=max_time_s, **_sampling(temperature, top_p))
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
        batch = generate_batch(model, tokenizer, [conversation(system, q) for q in questions[start:start + batch_size]],
                               max_new_tokens)
        answers.extend(g.text for g in batch)
    return answers


class _Cancelled(StoppingCriteria):
    def __init__(self, cancelled: threading.Event) -> None:
        self.cancelled = cancelled

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.cancelled.is_set(), dtype=torch.bool)


class _Relay(TextStreamer):
    """Hands each piece of decoded text to ``emit`` as generation produces it (whole words: the streamer holds a
    word back until it ends, so a multi-byte character is never split), and counts the tokens generated."""

    def __init__(self, tokenizer, emit: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.emit, self.generated = emit, 0

    def put(self, value: torch.Tensor) -> None:
        if not self.next_tokens_are_prompt:  # counted as generate_batch counts: the end-of-text (padding) is not
            self.generated += int((value != self.tokenizer.pad_token_id).sum())
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.emit(text)


@torch.inference_mode()
def generate_streamed(model, tokenizer, messages: Messages, max_new_tokens: int, emit: Callable[[str], None],
                      cancelled: threading.Event, temperature: float = 0.0, top_p: float | None = None,
                      max_time_s: float | None = None) -> Generation:
    """One answer, its text handed to ``emit`` piece by piece; stops at the next token once ``cancelled`` is set
    (its reader went away). Alone in its batch, so greedy answers are the ones ``generate_batch`` gives one
    question alone. The Generation's text is the whole answer, stripped as ``generate_batch``'s."""
    pieces: list[str] = []

    def keep(text: str) -> None:
        pieces.append(text)
        emit(text)

    batch = tokenizer([chat_prompt(tokenizer, messages)], return_tensors="pt", add_special_tokens=False)
    relay = _Relay(tokenizer, keep)
    model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                   eos_token_id=tokenizer.eos_token_id, max_time=max_time_s, streamer=relay,
                   stopping_criteria=StoppingCriteriaList([_Cancelled(cancelled)]), **_sampling(temperature, top_p))
    return Generation("".join(pieces).strip(), int(batch["input_ids"].shape[1]), relay.generated)
