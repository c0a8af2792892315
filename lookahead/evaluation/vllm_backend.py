"""vLLM generation for evaluation: merged models as they are, LoRA runs through vLLM's LoRA support (`enable_lora`
and a `LoRARequest` on every request), so an adapter needs no merge. The argument construction is plain Python and
tested on CPU; the engine itself needs a GPU and `pip install vllm`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lookahead.errors import ConfigError

# vLLM accepts these LoRA ranks; an adapter's rank is rounded up to the next one.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
LORA_NAME = "lookahead"


def engine_arguments(model_path: str, adapter_dir: str | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(`vllm.LLM` keyword arguments, `LoRARequest` arguments or None).

    The checkpoint's sampling defaults are not applied (`generation_config="vllm"`): evaluation decodes plain greedy.
    """
    if adapter_dir is None:
        return {"model": model_path, "tokenizer": model_path, "generation_config": "vllm"}, None
    config_path = Path(adapter_dir) / "adapter_config.json"
    if not config_path.is_file():
        raise ConfigError(f"{adapter_dir}: no adapter_config.json")
    rank = int(json.loads(config_path.read_text())["r"])
    max_rank = next((r for r in LORA_RANKS if r >= rank), None)
    if max_rank is None:
        raise ConfigError(f"LoRA rank {rank} is above vLLM's largest ({LORA_RANKS[-1]}); export a merged model")
    llm = {
        "model": model_path,
        "tokenizer": str(adapter_dir),  # the run's tokenizer, saved with the adapter
        "enable_lora": True,
        "max_lora_rank": max_rank,
        "max_loras": 1,
        "generation_config": "vllm",
    }
    return llm, {"lora_name": LORA_NAME, "lora_int_id": 1, "lora_path": str(adapter_dir)}


def sampling_arguments(max_new_tokens: int, stops: set[int] | None = None) -> dict[str, Any]:
    """Greedy, with every penalty neutral; generation ends at any of `stops` (EOS and the end-of-turn ids), which
    `generation_config="vllm"` would otherwise leave to the tokenizer's EOS alone."""
    return {
        "temperature": 0.0,
        "max_tokens": max_new_tokens,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "stop_token_ids": sorted(stops or ()),
    }


class VllmEngines:
    """The vLLM engines of one evaluation: one engine serves a model and, for a LoRA run, its seed too (the same
    engine with and without the `LoRARequest`), so the GPU holds one copy of the weights. A request for another model
    (a full fine-tune's seed) releases the engine before it builds the next.

    The adapter is used only when a caller asks for it: the seed of a LoRA run is the base model, never the adapter.
    """

    def __init__(self) -> None:
        self._key: tuple[str, str | None] | None = None
        self._llm: Any = None
        self._lora: Any = None

    def _engine(self, model_path: str, adapter_dir: str | None) -> tuple[Any, Any]:
        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
        except ImportError:
            raise ConfigError(
                "generation.backend=vllm needs `pip install vllm` and a GPU; use backend=transformers"
            ) from None
        key = (model_path, adapter_dir)
        if key != self._key:
            self.close()
            llm_kwargs, lora_kwargs = engine_arguments(model_path, adapter_dir)
            self._llm = LLM(**llm_kwargs)
            self._lora = LoRARequest(**lora_kwargs) if lora_kwargs else None
            self._key = key
        return self._llm, self._lora

    def generate(
        self,
        model_path: str,
        adapter_dir: str | None,
        prompts: list[list[int]],
        max_new_tokens: int,
        stops: set[int],
        use_adapter: bool = True,
    ) -> list[list[int]]:
        """Greedy continuations (token ids, cut at the first stop token) of each prompt, in input order; with the
        adapter of `adapter_dir` when `use_adapter`, else the base model alone."""
        from vllm import SamplingParams

        llm, lora = self._engine(model_path, adapter_dir)
        outputs = llm.generate(
            [{"prompt_token_ids": p} for p in prompts],
            SamplingParams(**sampling_arguments(max_new_tokens, stops)),
            lora_request=lora if use_adapter else None,
        )
        results = []
        for output in outputs:
            ids = list(output.outputs[0].token_ids)
            results.append(ids[: next((k for k, t in enumerate(ids) if t in stops), len(ids))])
        return results

    def close(self) -> None:
        """Release the engine (and its GPU memory) before another is built."""
        if self._llm is None:
            return
        import gc

        self._llm = self._lora = self._key = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
