"""Load the tokenizer and the model: a Hub id, a local folder, the packaged SmolLM2 GGUF, or a tiny random Llama."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from lookahead.errors import ConfigError
from lookahead.models.gguf import convert_gguf

log = logging.getLogger(__name__)


def hf_model(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def resolve_model_path(cfg: DictConfig, cache_dir: str) -> str:
    """The Hub id or local folder to load. Falls back to the packaged GGUF when the Hub cannot be reached."""
    path = cfg.get("path")
    if cfg.get("gguf_package") is None:
        if not path:
            raise ConfigError("model.path is not set: give a Hub id or a local folder")
        return path
    if not path:  # e.g. model=tiny: only the packaged tokenizer is wanted
        return str(convert_gguf(cfg.gguf_package, cfg.gguf_file, cache_dir))
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path)
        return path
    except OSError as e:
        log.info("%s not available from the Hub (%s); using the packaged GGUF", path, str(e).splitlines()[0][:120])
    return str(convert_gguf(cfg.gguf_package, cfg.gguf_file, cache_dir))


def load_tokenizer(cfg: DictConfig, model_path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer_path = cfg.get("tokenizer") or model_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, trust_remote_code=bool(cfg.trust_remote_code))
    except OSError as e:
        raise ConfigError(
            f"model.tokenizer/model.path={tokenizer_path!r}: cannot load a tokenizer ({str(e).splitlines()[0][:200]})"
        ) from None
    template = cfg.get("chat_template")
    if template:
        tokenizer.chat_template = Path(template).read_text() if Path(template).is_file() else template
    return tokenizer


def build_tiny_llama(cfg: DictConfig, tokenizer: Any, seed: int) -> Any:
    """A small randomly initialised Llama sized from `cfg.tiny`; deterministic for a given seed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    size = cfg.tiny
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        max_position_embeddings=size.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation=cfg.attn_implementation,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.to(_DTYPES[cfg.dtype] if cfg.dtype != "auto" else torch.float32)


def quantization_kwargs(lora_cfg: DictConfig, local_rank: int) -> dict[str, Any]:
    """bitsandbytes 4-bit settings for QLoRA; each process gets exactly one GPU (`device_map={"": local_rank}`)."""
    if not lora_cfg.get("load_in_4bit"):
        return {}
    if not torch.cuda.is_available():
        raise ConfigError("lora=qlora needs a CUDA GPU (bitsandbytes 4-bit); on CPU use lora=lora")
    from transformers import BitsAndBytesConfig

    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=lora_cfg.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=bool(lora_cfg.bnb_4bit_use_double_quant),
            bnb_4bit_compute_dtype=_DTYPES[lora_cfg.bnb_4bit_compute_dtype],
        ),
        "device_map": {"": local_rank},
    }


_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def refuse_pickle_weights(model_path: str) -> None:
    """Weights load from safetensors only: unpickling a checkpoint can run arbitrary code."""
    folder = Path(model_path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise ConfigError(
            f"model.path={model_path!r} holds pickle weights only ({', '.join(pickles[:3])}), which can run code when "
            "loaded; convert them to safetensors once in a trusted environment (model.save_pretrained) and point "
            "model.path there"
        )


def load_model(
    cfg: DictConfig, model_path: str, tokenizer: Any, lora_cfg: DictConfig, *, seed: int, local_rank: int
) -> Any:
    from transformers import AutoModelForCausalLM

    if cfg.get("tiny") is not None:
        return build_tiny_llama(cfg, tokenizer, seed)
    if cfg.dtype not in _DTYPES:
        raise ConfigError(f"model.dtype={cfg.dtype!r}: expected one of {list(_DTYPES)}")
    if cfg.trust_remote_code:
        log.warning("model.trust_remote_code=true: code from %s will run on this machine", model_path)
    refuse_pickle_weights(model_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_path,
            dtype=_DTYPES[cfg.dtype],
            attn_implementation=cfg.attn_implementation,
            trust_remote_code=bool(cfg.trust_remote_code),
            use_safetensors=True,  # never unpickle weights
            **quantization_kwargs(lora_cfg, local_rank),
        )
    except OSError as e:
        raise ConfigError(f"model.path={model_path!r}: cannot load a model ({str(e).splitlines()[0][:200]})") from None
    return model
