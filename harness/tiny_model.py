"""A tiny random model of the packaged base model's architecture, for the tests of plumbing.

Resuming, two processes against one, dispatching stage 4 to a deployment, an adapter that learned nothing: what such
a test asserts does not depend on the model being any good, yet the packaged SmolLM2-135M costs ~12 s a training
step here. transformers, PEFT, TRL and vLLM test their own machinery the same way, on "tiny-random" checkpoints.

This one is built from the packaged model's own config and tokenizer (the same Llama architecture, vocabulary and
chat template, so stage 2's chunks and stage 3's pairs are the same token for token), shrunk to two layers of
hidden size 128 with the packaged model's head size (64, which the CPU vLLM's attention accepts), its weights drawn
with a fixed seed: the same folder on every machine. It is an ordinary Hugging Face folder, used through the config
(``finetuning.base_model``) like any other base model: no test-only path in the product.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.project import LOCAL_PROFILE, REPO

TINY_MODEL = REPO / "build" / "models" / "tiny-smollm2"
SEED = 0
SHAPE = {"num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2,
         "num_key_value_heads": 1, "head_dim": 64,
         # weights 5x the packaged init's spread: at 0.02 the tied embedding outweighs two thin layers and every
         # answer echoes the prompt's last token ("\n"), so no answer could tell one adapter from another
         "initializer_range": 0.1}


def settings(folder: Path = TINY_MODEL) -> dict:
    """Config settings that train, evaluate and serve the tiny model instead of the profile's base model."""
    return {"finetuning": {"base_model": str(folder), "base_model_gguf": None}}


def build_tiny_model(folder: Path = TINY_MODEL) -> Path:
    """``folder`` with the tiny model in it, built once (a lock keeps parallel test workers from building it twice)."""
    from filelock import FileLock

    from core.files import atomic_folder
    from tasks.common.base_models import is_checkpoint

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if is_checkpoint(folder):
            return folder
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from core.config import load_config
        from tasks.common.base_models import packaged_gguf

        source, filename = packaged_gguf(load_config(LOCAL_PROFILE).finetuning.base_model_gguf)
        config = AutoConfig.from_pretrained(source, gguf_file=filename)
        config.update(SHAPE)
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=filename)
        torch.manual_seed(SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        with atomic_folder(folder) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    return folder


if __name__ == "__main__":
    print(build_tiny_model(Path(sys.argv[1]) if len(sys.argv) > 1 else TINY_MODEL))
