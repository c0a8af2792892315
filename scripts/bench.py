"""Benchmarks, measured side by side in one process with interleaved repeats; medians and ratios are printed and
written to bench/results.json.

    make bench                       # all rows
    python scripts/bench.py --only P4 --repeats 3

P1  train run time for real_prefix and virtual_prefix against vanilla (same model, steps, data)
P4  batched eval generation (batch 32) against a per-prompt loop, on SmolLM2-135M
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED_GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"


def questions(n: int) -> tuple[list[str], str]:
    path = SHARED_GSM8K / "test.jsonl"
    if path.is_file():
        with path.open() as f:
            return [json.loads(next(f))["question"] for _ in range(n)], str(path)
    from lookahead.data.arithmetic import generate_arithmetic

    return [r["question"] for r in generate_arithmetic(n, seed=1)], "built-in arithmetic"


def interleaved(variants: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each variant, running them in turn so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_p4(repeats: int, n_prompts: int = 32, max_new_tokens: int = 64) -> dict:
    import torch

    from lookahead.cli import compose_evaluate_config
    from lookahead.data.tokenize import ChatEncoder
    from lookahead.evaluation.generation import generate_batched
    from lookahead.evaluation.loading import load_for_evaluation

    cfg = compose_evaluate_config(["model=smollm2"])
    loaded = load_for_evaluation(cfg)
    encoder = ChatEncoder(loaded.tokenizer, 4096)
    texts, source = questions(n_prompts)
    prompts = [encoder.encode_prompt([{"role": "user", "content": q}]) for q in texts]
    outputs = {}

    def run(batch_size: int) -> None:
        outputs[batch_size] = generate_batched(
            loaded.model, loaded.tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens
        )

    with torch.inference_mode():
        medians = interleaved({"batched": lambda: run(n_prompts), "per_prompt": lambda: run(1)}, repeats)
    tokens = {b: sum(len(o) for o in out) for b, out in outputs.items()}
    return {
        "id": "P4",
        "what": f"eval generation, SmolLM2-135M, {n_prompts} prompts ({source}), {max_new_tokens} new tokens",
        "batched_s": medians["batched"],
        "per_prompt_s": medians["per_prompt"],
        "ratio": medians["per_prompt"] / medians["batched"],
        "goal": ">= 5x",
        "ok": medians["per_prompt"] / medians["batched"] >= 5,
        "new_tokens": tokens,
    }


def bench_p1(repeats: int, steps: int = 10) -> dict:
    from lookahead.cli import compose_train_config
    from lookahead.training import train

    base = [
        "model=tiny",
        "model.tiny.hidden_size=256",
        "model.tiny.intermediate_size=768",
        "model.tiny.num_hidden_layers=4",
        "model.tiny.num_attention_heads=4",
        "model.tiny.num_key_value_heads=4",
        "logger=none",
        "lora=none",
        f"trainer.max_steps={steps}",
        "trainer.save_steps=100000",
        "trainer.logging_steps=1000",
        "trainer.per_device_train_batch_size=4",
        "dataset.size=400",
    ]
    if (SHARED_GSM8K / "train.jsonl").is_file():
        base += ["dataset=gsm8k", f"dataset.path={SHARED_GSM8K / 'train.jsonl'}", "dataset.limit=400"]
        base = [o for o in base if o != "dataset.size=400"]
    tokens: dict[str, int] = {}
    tmp = Path(tempfile.mkdtemp(prefix="lookahead-bench-"))

    def run(method: str):
        cfg = compose_train_config([*base, f"method={method}", "resume=null"])
        cfg.paths.output_dir = str(tmp / f"{method}-{time.perf_counter_ns()}")
        summary = train(cfg)
        tokens[method] = summary["data"]["train/tokens"]

    medians = interleaved({m: (lambda m=m: run(m)) for m in ("vanilla", "real_prefix", "virtual_prefix")}, repeats)
    extra = tokens["virtual_prefix"] / tokens["vanilla"] - 1
    real = medians["real_prefix"] / medians["vanilla"]
    virtual = medians["virtual_prefix"] / medians["vanilla"]
    return {
        "id": "P1",
        "what": f"{steps} training steps, tiny Llama (h256, 4 layers), batch 4, same data",
        "seconds": medians,
        "real_ratio": real,
        "virtual_ratio": virtual,
        "virtual_extra_tokens": extra,
        "goal": "real <= 1.01x; virtual <= 1 + extra-token share",
        "ok": real <= 1.01 and virtual <= 1.0 + extra + 0.01,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=["P1", "P4"])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (P1)")
    parser.add_argument("--generation-repeats", type=int, default=2, help="interleaved repeats (P4: minutes each)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()
    rows = []
    if "P1" in args.only:
        rows.append(bench_p1(args.repeats))
    if "P4" in args.only:
        rows.append(bench_p4(args.generation_repeats))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| id | measured | ratio | goal | met |\n|---|---|---|---|---|")
    for r in rows:
        if r["id"] == "P1":
            ratio = (
                f"real {r['real_ratio']:.3f}x, virtual {r['virtual_ratio']:.3f}x "
                f"(+{100 * r['virtual_extra_tokens']:.1f}% tokens)"
            )
        else:
            ratio = f"{r['ratio']:.2f}x ({r['per_prompt_s']:.1f} s vs {r['batched_s']:.1f} s)"
        print(f"| {r['id']} | {r['what']} | {ratio} | {r['goal']} | {'yes' if r['ok'] else 'NO'} |")
    print(f"\n{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
