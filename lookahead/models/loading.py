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
    if Path(path).is_dir():  # a local folder is what was asked for (a fine-tune, an adapter): never the GGUF instead
        return path
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
        tokenizer.chat_template = chat_template_text(str(template))
    return tokenizer


TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def chat_template_text(template: str) -> str:
    """`model.chat_template`: a shipped template's name (`llama2_reference`), a .jinja file, or the template itself."""
    shipped = TEMPLATES_DIR / f"{template}.jinja"
    if "/" not in template and shipped.is_file():
        return shipped.read_text()
    return Path(template).read_text() if Path(template).is_file() else template


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
    if cfg.dtype not in _DTYPES:
        raise ConfigError(f"model.dtype={cfg.dtype!r}: expected one of {list(_DTYPES)}")
    return model.to(_DTYPES[cfg.dtype] if cfg.dtype != "auto" else torch.float32)


def check_model(cfg: DictConfig, lora_cfg: DictConfig) -> None:
    """The model settings every source shares (Hub, local folder, GGUF, tiny), checked once before anything loads."""
    if cfg.get("dtype") not in _DTYPES:
        raise ConfigError(f"model.dtype={cfg.get('dtype')!r}: expected one of {list(_DTYPES)}")
    if lora_cfg.get("load_in_4bit"):
        compute = lora_cfg.get("bnb_4bit_compute_dtype")
        if compute not in _DTYPES or compute == "auto":
            raise ConfigError(f"lora.bnb_4bit_compute_dtype={compute!r}: expected float32, bfloat16 or float16")
        storage = lora_cfg.get("bnb_4bit_quant_storage")
        if storage is not None and (storage not in _DTYPES or storage == "auto"):
            raise ConfigError(f"lora.bnb_4bit_quant_storage={storage!r}: expected null, float32, bfloat16 or float16")


def quantization_kwargs(lora_cfg: DictConfig, local_rank: int, sharding: str | None = None) -> dict[str, Any]:
    """bitsandbytes 4-bit settings for QLoRA; each process gets exactly one device (`device_map={"": local_rank}`
    on CUDA, the CPU otherwise: bitsandbytes runs NF4 on CPU too).

    Under FSDP or ZeRO-3 (`sharding`) the packed 4-bit weights are stored in the compute dtype unless
    `lora.bnb_4bit_quant_storage` says otherwise: both shard parameters by dtype, and uint8 storage cannot be
    flattened together with the LoRA weights.
    """
    if not lora_cfg.get("load_in_4bit"):
        return {}
    from transformers import BitsAndBytesConfig

    compute = _DTYPES[lora_cfg.bnb_4bit_compute_dtype]
    storage = lora_cfg.get("bnb_4bit_quant_storage")
    extra = {}
    if storage is not None:
        extra["bnb_4bit_quant_storage"] = _DTYPES[storage]
    elif sharding:
        log.info("QLoRA under %s: 4-bit weights stored as %s", sharding, lora_cfg.bnb_4bit_compute_dtype)
        extra["bnb_4bit_quant_storage"] = compute
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=lora_cfg.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=bool(lora_cfg.bnb_4bit_use_double_quant),
            bnb_4bit_compute_dtype=compute,
            **extra,
        ),
        "device_map": {"": local_rank if torch.cuda.is_available() else "cpu"},
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
    cfg: DictConfig,
    model_path: str,
    tokenizer: Any,
    lora_cfg: DictConfig,
    *,
    seed: int,
    local_rank: int,
    sharding: str | None = None,
) -> Any:
    """The model, through `from_pretrained` whatever its source, so quantization, dtype and attention settings apply
    the same way to all of them. The tiny random model is built, written to a temporary folder and loaded from it."""
    check_model(cfg, lora_cfg)
    if cfg.get("tiny") is not None:
        import tempfile

        from safetensors.torch import save_model

        # The global RNG is left as building the model in memory left it (peft draws LoRA's A from it next).
        with tempfile.TemporaryDirectory(prefix="lookahead-tiny-") as folder, torch.random.fork_rng(devices=[]):
            # Written by hand: under a process group `save_pretrained` writes on rank 0 only, and every rank loads.
            tiny = build_tiny_llama(cfg, tokenizer, seed)
            tiny.config.to_json_file(str(Path(folder) / "config.json"))
            save_model(tiny, str(Path(folder) / "model.safetensors"), metadata={"format": "pt"})
            model = _from_pretrained(cfg, folder, lora_cfg, local_rank, sharding)
        model.name_or_path = model.config._name_or_path = ""  # the folder is gone: no path, as when it is built
        return model
    if cfg.trust_remote_code:
        log.warning("model.trust_remote_code=true: code from %s will run on this machine", model_path)
    refuse_pickle_weights(model_path)
    return _from_pretrained(cfg, model_path, lora_cfg, local_rank, sharding)


def _from_pretrained(cfg: DictConfig, model_path: str, lora_cfg: DictConfig, local_rank: int, sharding: str | None):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            model_path,
            dtype=_DTYPES[cfg.dtype],
            attn_implementation=cfg.attn_implementation,
            trust_remote_code=bool(cfg.trust_remote_code),
            use_safetensors=True,  # never unpickle weights
            **quantization_kwargs(lora_cfg, local_rank, sharding),
        )
    except OSError as e:
        raise ConfigError(f"model.path={model_path!r}: cannot load a model ({str(e).splitlines()[0][:200]})") from None
