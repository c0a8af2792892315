"""Export a run for serving: the LoRA adapter merged into its base model, written as safetensors shards with the
tokenizer, the chat template, `generation_config.json` and a model card, in `<run dir>/merged/`.

A full fine-tune is exported as it is (in the chosen dtype). A QLoRA adapter is merged into the base reloaded in
16-bit (bfloat16 unless told otherwise), never into the 4-bit weights: merging into quantized weights would round
the update away. The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lookahead.errors import ConfigError
from lookahead.models.runs import is_adapter, load_adapter_model, read_run
from lookahead.shipping.card import write_card

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
MERGED_DIR = "merged"


def export_dtype(train_cfg: Any, dtype: str) -> str:
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: expected one of {list(DTYPES)}")
    if dtype != "auto":
        return dtype
    if train_cfg.lora.get("load_in_4bit"):
        return "bfloat16"  # QLoRA: merge into a 16-bit base, never the 4-bit weights
    trained = str(train_cfg.model.get("dtype", "float32"))
    return trained if trained in DTYPES[1:] else "float32"


def merged_model(run_dir: Path, dtype: str = "auto", cache_dir: str | None = None) -> tuple[Any, Any, Any, dict]:
    """(model with the adapter merged in, tokenizer, training config, summary) for a run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train_cfg, final, summary = read_run(run_dir)
    dtype = export_dtype(train_cfg, dtype)
    tokenizer = AutoTokenizer.from_pretrained(final)
    if is_adapter(final):
        model_cfg = OmegaConf.merge(train_cfg.model, {"dtype": dtype})  # the 16-bit (or fp32) base, never 4-bit
        cache = cache_dir or train_cfg.paths.cache_dir
        model = load_adapter_model(train_cfg, final, tokenizer, cache, model_cfg)[0].merge_and_unload()
    else:
        from lookahead.models.loading import _DTYPES

        model = AutoModelForCausalLM.from_pretrained(final, dtype=_DTYPES[dtype], use_safetensors=True)
    return model.eval(), tokenizer, train_cfg, summary


def export_merged(run_dir: Path, dtype: str = "auto", out_dir: Path | None = None, max_shard_size: str = "2GB") -> Path:
    """Write the merged model to `out_dir` (default `<run_dir>/merged`); returns it."""
    model, tokenizer, train_cfg, summary = merged_model(run_dir, dtype)
    out = Path(out_dir) if out_dir else run_dir / MERGED_DIR
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.config.use_cache = True
    model.save_pretrained(partial, safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(partial)  # with its chat template
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(partial)
    config_copy = run_dir / "final" / "lookahead_config.yaml"
    if config_copy.is_file():
        shutil.copy2(config_copy, partial / "lookahead_config.yaml")
    command = "\n".join(c for c in (summary.get("command"), f"lookahead export run_dir={run_dir} dtype={dtype}") if c)
    write_card(partial, train_cfg, summary, kind="merged", command=command)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    log.info("Merged model: %s", out)
    return out
