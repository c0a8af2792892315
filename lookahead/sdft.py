"""Self-Distillation Fine-Tuning (SDFT; Yang et al., 2024): train on the seed model's own rewrites of the answers.

The seed model rewrites each training answer in its own words, conditioned on the original. Training on text the
model would produce itself moves its distribution less. For GSM8K-style answers (`... #### 72`) a rewrite whose final
answer disagrees with the original falls back to the original; so does an empty rewrite.

Rewrites are generated once, in batches with the evaluation's generation code, and cached on disk under
`<paths.cache_dir>/sdft/<key>.jsonl`, keyed by the model, the generation settings and the data: a second run with the
same inputs generates nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lookahead.constants import ASSISTANT
from lookahead.evaluation.generation import generate_batched
from lookahead.evaluation.metrics import extract_hash_answer, extract_last_number

log = logging.getLogger(__name__)

# The SDFT paper's distillation template for general instructions.
DEFAULT_TEMPLATE = (
    "Below is an instruction that describes a task along with a reference answer. Using the reference answer as a "
    "guide, write your own response.\n### Instruction:\n{instruction}\n### Reference Answer:\n{answer}\n### Response:\n"
)


def final_answer_agrees(rewrite: str, original: str) -> bool:
    """For answers ending in `#### <number>`: the rewrite must reach the same number (its `####` or last number)."""
    gold = extract_hash_answer(original)
    if gold is None:
        return True  # nothing to check against
    predicted = extract_hash_answer(rewrite)
    if predicted is not None:
        return predicted == gold
    number = extract_last_number(rewrite)
    try:
        return number is not None and abs(number - float(gold)) < 1e-6
    except ValueError:
        return False


def answer_pairs(examples: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(user turn, answer) of each training example: what is rewritten, and what the cache is keyed on."""
    return [(ex["messages"][-2]["content"], ex["messages"][-1]["content"]) for ex in examples]


def cache_key(
    model_cfg: DictConfig, model_path: str, seed: int, method_cfg: DictConfig, examples: list[dict[str, Any]]
) -> str:
    payload = {
        "model": OmegaConf.to_container(model_cfg, resolve=True),
        "model_path": model_path,
        "seed": seed,
        "template": method_cfg.get("template") or DEFAULT_TEMPLATE,
        "max_new_tokens": int(method_cfg.max_new_tokens),
        "check": method_cfg.get("check_final_answer", True),
        "pairs": answer_pairs(examples),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def rewrite_answers(
    model: Any,
    encoder: Any,
    examples: list[dict[str, Any]],
    method_cfg: DictConfig,
    cache_path: Path,
    *,
    write_cache: bool,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The examples with their answers replaced by the seed model's rewrites (or kept, where a rewrite fails)."""
    template = method_cfg.get("template") or DEFAULT_TEMPLATE
    pairs = answer_pairs(examples)
    if cache_path.is_file():
        rewrites = [json.loads(line)["rewrite"] for line in cache_path.read_text().splitlines() if line]
        log.info("SDFT: %d rewrites from the cache %s", len(rewrites), cache_path)
    else:
        prompts = [
            encoder.encode_prompt([{"role": "user", "content": template.format(instruction=q, answer=a)}])
            for q, a in pairs
        ]
        was_training = model.training
        model.eval()
        outputs = generate_batched(
            model,
            encoder.tokenizer,
            prompts,
            batch_size=int(method_cfg.batch_size),
            max_new_tokens=int(method_cfg.max_new_tokens),
            show_progress=write_cache,
            desc="SDFT rewrites",
        )
        model.train(was_training)
        rewrites = [encoder.tokenizer.decode(o, skip_special_tokens=True).strip() for o in outputs]
        if write_cache:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(cache_path.name + ".tmp")
            tmp.write_text("".join(json.dumps({"rewrite": r}, ensure_ascii=False) + "\n" for r in rewrites))
            tmp.replace(cache_path)

    out, counts = [], {"train/sdft_rewritten": 0, "train/sdft_kept_original": 0}
    check = bool(method_cfg.get("check_final_answer", True))
    for example, (_, original), rewrite in zip(examples, pairs, rewrites):
        if rewrite and (not check or final_answer_agrees(rewrite, original)):
            messages = [*example["messages"][:-1], {"role": ASSISTANT, "content": rewrite}]
            out.append({**example, "messages": messages, "original_answer": original})
            counts["train/sdft_rewritten"] += 1
        else:
            out.append(example)
            counts["train/sdft_kept_original"] += 1
    log.info("SDFT: %s", counts)
    return out, counts
