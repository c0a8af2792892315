"""Batched, left-padded greedy generation, and sharding of prompt lists across `accelerate launch` processes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from lookahead.models.loading import hf_model


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS and end-of-turn ids: generation stops at any of them."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return sorted(i for i in ids if i is not None)


@contextlib.contextmanager
def plain_greedy(model: Any) -> Iterator[None]:
    """Greedy decoding with nothing from the model's `generation_config` but its special tokens.

    `generate()` fills every unset option from the model's own generation_config, so sampling and penalty settings
    shipped with a checkpoint (Qwen2.5: repetition_penalty=1.05, top_p, top_k) would leak into "greedy" decoding.
    Evaluation swaps in a clean config for the call, keeping only the special-token ids, and restores the original.
    """
    from transformers import GenerationConfig

    target = hf_model(model)
    original = getattr(target, "generation_config", None)
    tokens = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
    clean = GenerationConfig(
        **{k: getattr(original, k, None) for k in tokens if getattr(original, k, None) is not None}
    )
    target.generation_config = clean
    try:
        yield
    finally:
        target.generation_config = original


@torch.no_grad()
def generate_batched(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    batch_size: int,
    max_new_tokens: int,
    show_progress: bool = False,
    desc: str = "Generating",
) -> list[list[int]]:
    """Greedy continuations (token ids, stop token excluded) of each prompt, in input order.

    Decoding is plain greedy: no sampling, penalty or length setting from the model's generation_config applies.
    Prompts are sorted by length so a batch holds similar lengths (less padding), then left-padded so every row's
    continuation starts at the same column.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_token_ids(model, tokenizer)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    batches = range(0, len(order), batch_size)
    for start in tqdm(batches, desc=desc, disable=not show_progress):
        rows = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            input_ids[r, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            attention_mask[r, width - len(prompts[i]) :] = 1
        with plain_greedy(model):
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad_id,
                eos_token_id=stops,
            )
        for r, i in enumerate(rows):
            new = output[r, width:].tolist()
            cut = next((k for k, t in enumerate(new) if t in stops), len(new))
            results[i] = new[:cut]
    return results


def map_across_processes(fn: Callable[[list[Any]], list[Any]], items: list[Any]) -> list[Any]:
    """Run `fn` on this process's share of `items` and return every process's results, in order, on all ranks."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    if state.num_processes == 1:
        return fn(items)
    with state.split_between_processes(list(enumerate(items))) as share:
        local = list(zip([i for i, _ in share], fn([item for _, item in share])))
    gathered = gather_object(local)
    return [result for _, result in sorted(gathered, key=lambda pair: pair[0])]
