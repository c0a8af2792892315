"""Benchmarks, measured side by side in one process with interleaved repeats; medians and ratios are printed and
written to bench/results.json.

    make bench                       # all rows
    python scripts/bench.py --only P4 --repeats 3

P1  train run time for real_prefix and virtual_prefix against vanilla (same model, steps, data)
P2  train tokens/s against TRL's SFTTrainer (same model, data, batch, completion-only masking), at the SmolLM2 (49k)
    and the Llama-3 (128k) vocabulary
P3  train tokens/s with length grouping and padding-free batches against padded batches
P4  batched eval generation (batch 32) against a per-prompt loop, on SmolLM2-135M
P5  peak RSS of the default `python train.py`
P7  peak RSS of training at the Llama-3 vocabulary: ours (chunked answer-only head) against TRL and against the
    full-logits path (trainer.loss_chunk_tokens=0)
P8  peak RSS of a SmolLM2 LoRA step, batch 8 x 320 tokens, no gradient checkpointing

P2 and P7 share their runs: each variant trains in a fresh process (its peak RSS is its own), variants interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SHARED_GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"


def questions(n: int) -> tuple[list[str], str]:
    path = SHARED_GSM8K / "test.jsonl"
    if path.is_file():
        with path.open() as f:
            return [json.loads(next(f))["question"] for _ in range(n)], str(path)
    from lookahead.data.arithmetic import generate_arithmetic

    return [r["question"] for r in generate_arithmetic(n, seed=1)], "built-in arithmetic"


RAW_TIMES: dict[str, list[float]] = {}  # every timed run, kept in results.json beside the medians


def interleaved(variants: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each variant, running them in turn so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    RAW_TIMES.update({name: [round(t, 3) for t in ts] for name, ts in times.items()})
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_p4(repeats: int, n_prompts: int = 32, max_new_tokens: int = 48) -> dict:
    import torch

    from lookahead.commands.compose import compose_evaluate_config
    from lookahead.data.tokenize import ChatEncoder
    from lookahead.evaluation.loading import load_for_evaluation
    from lookahead.generation import generate_batched

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


def bench_p1(repeats: int, steps: int = 16, batch: int = 4) -> dict:
    """Run time of each preview against vanilla, with the same steps, examples and batches.

    The run time is the data pass before training (reading, previewing and encoding every example once) plus the
    training steps (collation with the on-the-fly preview, forward, backward, optimizer step). The steps of the three
    methods are interleaved one by one, each method with its own model (same init), so machine drift hits them
    alike; the Trainer's own per-step bookkeeping is the same for every method and left out.

    Both previews lengthen every example: real_prefix adds the connector and m answer tokens to the prompt, virtual
    the connector and P twice. So the goal is judged per token: the preview machinery itself must cost at most 1%
    beyond the tokens it adds.
    """
    import torch

    from lookahead.commands.compose import compose_train_config
    from lookahead.models.loading import build_tiny_llama, resolve_model_path
    from lookahead.objectives.loss import AnswerTokenLoss
    from lookahead.training.recipe import build_data

    n_examples = steps * batch
    base = [*TINY_256, f"dataset.size={n_examples}"]
    if (SHARED_GSM8K / "train.jsonl").is_file():
        base = [
            *TINY_256,
            "dataset=gsm8k",
            f"dataset.path={SHARED_GSM8K / 'train.jsonl'}",
            f"dataset.limit={n_examples}",
        ]
    methods = ("vanilla", "real_prefix", "virtual_prefix")
    cfgs = {m: compose_train_config([*base, f"method={m}"]) for m in methods}
    model_path = resolve_model_path(cfgs["vanilla"].model, cfgs["vanilla"].paths.cache_dir)
    data: dict = {}
    data_pass = interleaved({m: (lambda m=m: data.update({m: build_data(cfgs[m], model_path)})) for m in methods}, 3)

    torch.manual_seed(0)
    models = {m: build_tiny_llama(cfgs[m].model, data[m].tokenizer, seed=42) for m in methods}
    optimizers = {m: torch.optim.AdamW(models[m].parameters(), lr=2e-4) for m in methods}
    loss_fn = AnswerTokenLoss(first_k=5)
    step_seconds = {m: 0.0 for m in methods}
    for _ in range(repeats):
        for step in range(steps):
            for m in methods:
                start = time.perf_counter()
                examples = data[m].train[step * batch : (step + 1) * batch]
                inputs = data[m].collator(examples)
                outputs = models[m](input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
                loss = loss_fn(outputs, inputs["labels"])
                loss.backward()
                optimizers[m].step()
                optimizers[m].zero_grad()
                step_seconds[m] += time.perf_counter() - start
    seconds = {m: data_pass[m] + step_seconds[m] / repeats for m in methods}
    tokens = {m: data[m].metrics["train/tokens"] for m in methods}
    extra = {m: tokens[m] / tokens["vanilla"] - 1 for m in methods}
    wall = {m: seconds[m] / seconds["vanilla"] for m in methods}
    per_token = {m: wall[m] / (1 + extra[m]) for m in methods}
    return {
        "id": "P1",
        "what": f"data pass + {steps} training steps (batch {batch}, steps interleaved across methods, {repeats} "
        "repeats), tiny Llama (h256, 4 layers), the same GSM8K examples",
        "seconds": seconds,
        "data_pass_s": data_pass,
        "real_ratio": wall["real_prefix"],
        "virtual_ratio": wall["virtual_prefix"],
        "real_extra_tokens": extra["real_prefix"],
        "virtual_extra_tokens": extra["virtual_prefix"],
        "per_token_ratio": {m: per_token[m] for m in methods if m != "vanilla"},
        "goal": "<= 1.01x per token, i.e. run time <= 1.01 x (1 + extra-token share)",
        "ok": all(per_token[m] <= 1.01 for m in methods),
    }


TINY_256 = [
    "model=tiny",
    "model.tiny.hidden_size=256",
    "model.tiny.intermediate_size=768",
    "model.tiny.num_hidden_layers=4",
    "model.tiny.num_attention_heads=4",
    "model.tiny.num_key_value_heads=4",
    "logger=none",
    "lora=none",
    "trainer.save_steps=100000",
    "trainer.logging_steps=1000",
]


def epoch_data(n: int) -> list[str]:
    if (SHARED_GSM8K / "train.jsonl").is_file():
        return ["dataset=gsm8k", f"dataset.path={SHARED_GSM8K / 'train.jsonl'}", f"dataset.limit={n}"]
    return [f"dataset.size={n}"]


def ours_tokens_per_second(overrides: list[str], out: Path) -> float:
    from lookahead.commands.compose import compose_train_config
    from lookahead.training.recipe import train

    cfg = compose_train_config([*TINY_256, "method=vanilla", *overrides])
    cfg.paths.output_dir = str(out / f"run-{time.perf_counter_ns()}")
    summary = train(cfg)
    return summary["data"]["train/tokens"] / summary["train_seconds"]


VOCABS = {"smollm2": "smollm2-instruct", "llama3": "llama3-instruct"}  # shared tokenizers: 49,152 and 128,256


def run_worker(spec: dict) -> dict:
    """Train one variant in this process and report its tokens/s and this process's peak RSS."""
    import resource

    from lookahead.commands.compose import compose_train_config

    if spec["impl"] == "saved_activations":  # P8's floor: bytes only, no training
        return {**spec, "saved_gb": saved_activation_gb(spec["overrides"], spec["batch"], spec["length"])}
    steps, batch = spec["steps"], spec["batch"]
    tokenizer = [f"model.tokenizer={ROOT.parent / 'shared' / 'tokenizers' / VOCABS[spec['vocab']]}"]
    tmp = Path(tempfile.mkdtemp(prefix=f"lookahead-bench-{spec['impl']}-"))
    if spec["impl"] == "smollm2_lora":  # P8
        overrides = [
            "model=smollm2", "lora=lora", "logger=none",
            f"model.gradient_checkpointing={spec.get('checkpointing', False)}",
            *epoch_data(steps * batch), f"trainer.per_device_train_batch_size={batch}", "trainer.max_seq_length=320",
            f"trainer.max_steps={steps}", "trainer.save_steps=100000", f"trainer.loss_chunk_tokens={spec['chunk']}",
        ]  # fmt: skip
        from lookahead.training.recipe import train

        cfg = compose_train_config(overrides)
        cfg.paths.output_dir = str(tmp / "run")
        summary = train(cfg)
        tok_s = summary["data"]["train/tokens"] / summary["train_seconds"]
    elif spec["impl"] == "trl":
        tok_s = trl_tokens_per_second([*tokenizer, *epoch_data(steps * batch)], batch, tmp)
    else:
        chunk = spec.get("chunk", 256) if spec["impl"] == "lookahead" else 0
        overrides = [
            *tokenizer, *epoch_data(steps * batch), f"trainer.per_device_train_batch_size={batch}",
            "trainer.max_seq_length=1024", f"trainer.loss_chunk_tokens={chunk}",
        ]  # fmt: skip
        tok_s = ours_tokens_per_second(overrides, tmp)
    return {**spec, "tok_s": tok_s, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def saved_activation_gb(overrides: list[str], batch: int, length: int) -> float:
    """The model's weights plus the bytes autograd keeps for the backward of one forward pass of the SmolLM2 LoRA
    backbone (LM head aside) on a full `batch x length` batch, each storage counted once (`saved_tensors_hooks`): a
    floor under the peak of any training step that does not recompute activations, whatever the allocator or the
    loss (gradients, optimizer state and the interpreter come on top)."""
    import torch

    from lookahead.commands.compose import compose_train_config
    from lookahead.models.loading import hf_model, load_model, load_tokenizer, resolve_model_path
    from lookahead.models.lora import apply_lora

    cfg = compose_train_config(["model=smollm2", "lora=lora", "model.gradient_checkpointing=false", *overrides])
    path = resolve_model_path(cfg.model, cfg.paths.cache_dir)
    tokenizer = load_tokenizer(cfg.model, path)
    model = apply_lora(load_model(cfg.model, path, tokenizer, cfg.lora, seed=0, local_rank=0), cfg.lora, False)
    model.train()
    weights = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, len(tokenizer), (batch, length), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hf_model(model).model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return (sum(saved.values()) + sum(weights.values())) / 1024**3


def trl_tokens_per_second(overrides: list[str], batch: int, tmp: Path) -> float:
    """TRL's SFTTrainer with its defaults (fused LM head, completion-only loss), as its users would run it."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from lookahead.commands.compose import compose_train_config
    from lookahead.data.sources import load_examples
    from lookahead.models.loading import build_tiny_llama, load_tokenizer, resolve_model_path

    cfg = compose_train_config([*TINY_256, "method=vanilla", *overrides])
    tokenizer = load_tokenizer(cfg.model, resolve_model_path(cfg.model, cfg.paths.cache_dir))
    rows = [{"prompt": ex["messages"][:-1], "completion": ex["messages"][-1:]} for ex in load_examples(cfg.dataset)]
    args = SFTConfig(
        output_dir=str(tmp / "trl"), max_length=1024, per_device_train_batch_size=batch, num_train_epochs=1,
        learning_rate=2e-4, logging_steps=1000, save_strategy="no", report_to=[], completion_only_loss=True,
        use_cpu=True, dataloader_pin_memory=False, seed=42,
    )  # fmt: skip
    trainer = SFTTrainer(
        model=build_tiny_llama(cfg.model, tokenizer, seed=42),
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    return tokens / trainer.train().metrics["train_runtime"]


def in_fresh_process(spec: dict) -> dict:
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    result = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(f"bench worker {spec} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_p2_p7(repeats: int, steps: int = 20, batch: int = 8) -> list[dict]:
    """P2 (tokens/s against TRL, both vocabularies) and P7 (peak RSS at the Llama-3 vocabulary), from the same runs:
    each variant in a fresh process, all variants interleaved, `repeats` times; medians."""
    variants = [("lookahead", "smollm2"), ("trl", "smollm2"), ("lookahead", "llama3"), ("trl", "llama3"),
                ("lookahead_full_logits", "llama3")]  # fmt: skip
    runs: dict[tuple[str, str], list[dict]] = {v: [] for v in variants}
    for _ in range(repeats):
        for impl, vocab in variants:
            runs[(impl, vocab)].append(in_fresh_process({"impl": impl, "vocab": vocab, "steps": steps, "batch": batch}))
    RAW_TIMES.update({f"{i}/{v}": [r["tok_s"] for r in rs] for (i, v), rs in runs.items()})
    med = {k: {m: statistics.median(r[m] for r in rs) for m in ("tok_s", "peak_rss_gb")} for k, rs in runs.items()}
    what = (
        f"tiny Llama h256 x 4 layers, {steps} steps of {batch} GSM8K examples, {repeats} interleaved repeats, medians"
    )
    p2 = {
        "id": "P2",
        "what": f"train tokens/s vs TRL SFTTrainer 1.16 defaults (completion-only), {what}",
        "tok_s": {f"{i}/{v}": m["tok_s"] for (i, v), m in med.items()},
        "ratios": {v: med[("lookahead", v)]["tok_s"] / med[("trl", v)]["tok_s"] for v in VOCABS},
        "goal": ">= 1.0x at both vocabularies",
    }
    p2["ok"] = all(r >= 1.0 for r in p2["ratios"].values())
    ours, trl, full = (med[(i, "llama3")]["peak_rss_gb"] for i in ("lookahead", "trl", "lookahead_full_logits"))
    p7 = {
        "id": "P7",
        "what": f"peak process RSS at the Llama-3 vocabulary (128k), {what}",
        "peak_rss_gb": {"lookahead": ours, "trl": trl, "lookahead_full_logits": full},
        "vs_trl": ours / trl,
        "vs_full_logits": ours / full,
        "goal": "<= TRL's peak and <= 1/3 of the full-logits path",
        "ok": ours <= trl and ours <= full / 3,
    }
    return [p2, p7]


def bench_p8(steps: int = 3, batch: int = 8) -> dict:
    """Peak RSS of SmolLM2-135M LoRA training, batch 8 x up to 320 tokens, no gradient checkpointing; the
    full-logits path beside it for scale."""
    spec = {"impl": "smollm2_lora", "vocab": "smollm2", "steps": steps, "batch": batch}
    ours = in_fresh_process({**spec, "chunk": 256})
    full = in_fresh_process({**spec, "chunk": 0})
    checkpointed = in_fresh_process({**spec, "chunk": 256, "checkpointing": True})  # for scale: activations
    floor = {  # weights + what autograd must keep for one full batch, before optimizer, logits and the allocator
        name: in_fresh_process({"impl": "saved_activations", "overrides": o, "batch": batch, "length": 320})["saved_gb"]
        for name, o in (("default", []), ("lora.dropout=0", ["lora.dropout=0"]))
    }
    return {
        "id": "P8",
        "what": f"peak RSS, SmolLM2-135M LoRA, {steps} steps of batch {batch} x <= 320 GSM8K tokens, no checkpointing",
        "peak_rss_gb": ours["peak_rss_gb"],
        "full_logits_peak_rss_gb": full["peak_rss_gb"],
        "checkpointed_peak_rss_gb": checkpointed["peak_rss_gb"],
        "tok_s": {"chunked": ours["tok_s"], "full_logits": full["tok_s"], "checkpointed": checkpointed["tok_s"]},
        "saved_activations_gb": floor,
        "goal": "<= 3 GB",
        "ok": ours["peak_rss_gb"] <= 3.0,
    }


def bench_p3(repeats: int, n: int = 32, batch: int = 8) -> dict:
    """Length-grouped, padding-free packed batches against plain padded batches (the HF Trainer default)."""
    overrides = [*epoch_data(n), f"trainer.per_device_train_batch_size={batch}", "trainer.max_seq_length=1024"]
    tmp = Path(tempfile.mkdtemp(prefix="lookahead-bench-p3-"))
    variants = {
        "padded": [],
        "grouped": ["trainer.group_by_length=true"],
        "packed": ["trainer.padding_free=true"],
        "grouped+packed": ["trainer.group_by_length=true", "trainer.padding_free=true"],
    }
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, extra in variants.items():
            rates[name].append(ours_tokens_per_second([*overrides, *extra], tmp))
    medians = {k: statistics.median(v) for k, v in rates.items()}
    best = max(medians["grouped"], medians["packed"], medians["grouped+packed"])
    return {
        "id": "P3",
        "what": f"train tokens/s, tiny Llama h256 (sdpa, CPU), {n} GSM8K examples, batch {batch}",
        "tok_s": medians,
        "ratios": {k: v / medians["padded"] for k, v in medians.items()},
        "ratio": best / medians["padded"],
        "goal": ">= 1.5x",
        "ok": best / medians["padded"] >= 1.5,
    }


def bench_p5(steps: int = 8) -> dict:
    """Peak RSS of the default `python train.py` (fewer steps: the peak is reached in the first ones)."""
    import resource
    import subprocess

    tmp = Path(tempfile.mkdtemp(prefix="lookahead-bench-p5-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"trainer.max_steps={steps}", f"paths.log_dir={tmp}"],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
    )
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    return {
        "id": "P5",
        "what": f"peak RSS of the default `python train.py` ({steps} steps, SmolLM2 + LoRA)",
        "peak_rss_gb": peak_gb,
        "ratio": peak_gb,
        "goal": "<= 2.5 GB",
        "ok": peak_gb <= 2.5,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=["P5", "P8", "P1", "P2", "P3", "P4"])  # P2 includes P7
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one P2/P7/P8 run in a fresh process
    parser.add_argument("--steps", type=int, default=20, help="training steps per P2/P7 run")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats (P3)")
    parser.add_argument("--p1-repeats", type=int, default=2, help="repeats of the interleaved steps (P1)")
    parser.add_argument("--trl-repeats", type=int, default=2, help="repeats (P2: TRL takes a minute each on CPU)")
    parser.add_argument("--generation-repeats", type=int, default=2, help="interleaved repeats (P4: minutes each)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args()
    import logging

    if args.worker:
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0

    logging.basicConfig(level=logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()
    rows = []
    if "P5" in args.only:  # first: it measures a child process's peak, and no other child has run yet
        rows.append(bench_p5())
    if "P1" in args.only:
        rows.append(bench_p1(args.p1_repeats))
    if "P8" in args.only:
        rows.append(bench_p8())
    if "P2" in args.only or "P7" in args.only:
        rows += bench_p2_p7(args.trl_repeats, steps=args.steps)
    if "P3" in args.only:
        rows.append(bench_p3(args.repeats))
    if "P4" in args.only:
        rows.append(bench_p4(args.generation_repeats))
    rows.sort(key=lambda r: r["id"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| id | measured | ratio | goal | met |\n|---|---|---|---|---|")
    for r in rows:
        if r["id"] == "P1":
            ratio = (
                f"real {r['real_ratio']:.3f}x (+{100 * r['real_extra_tokens']:.1f}% tokens, "
                f"{r['per_token_ratio']['real_prefix']:.3f}x per token), virtual {r['virtual_ratio']:.3f}x "
                f"(+{100 * r['virtual_extra_tokens']:.1f}% tokens, {r['per_token_ratio']['virtual_prefix']:.3f}x per "
                "token)"
            )
        elif r["id"] == "P2":
            ratio = ", ".join(
                f"{v} {x:.2f}x ({r['tok_s'][f'lookahead/{v}']:.0f} vs {r['tok_s'][f'trl/{v}']:.0f} tok/s)"
                for v, x in r["ratios"].items()
            )
        elif r["id"] == "P7":
            gb = r["peak_rss_gb"]
            ratio = (
                f"{gb['lookahead']:.2f} GB vs TRL {gb['trl']:.2f} GB ({r['vs_trl']:.2f}x) and full logits "
                f"{gb['lookahead_full_logits']:.2f} GB ({r['vs_full_logits']:.2f}x)"
            )
        elif r["id"] == "P8":
            ratio = (
                f"{r['peak_rss_gb']:.2f} GB (full logits {r['full_logits_peak_rss_gb']:.2f} GB; with gradient "
                f"checkpointing {r['checkpointed_peak_rss_gb']:.2f} GB); floor, the weights and the activations "
                f"autograd saves for one 8 x 320 batch: {r['saved_activations_gb']['default']:.2f} GB (lora.dropout=0: "
                f"{r['saved_activations_gb']['lora.dropout=0']:.2f} GB)"
            )
        elif r["id"] == "P3":
            ratio = ", ".join(f"{k} {v:.2f}x" for k, v in r["ratios"].items() if k != "padded")
        elif r["id"] == "P4":
            ratio = f"{r['ratio']:.2f}x ({r['per_prompt_s']:.1f} s vs {r['batched_s']:.1f} s)"
        else:
            ratio = f"{r['peak_rss_gb']:.2f} GB"
        print(f"| {r['id']} | {r['what']} | {ratio} | {r['goal']} | {'yes' if r['ok'] else 'NO'} |")
    print(f"\n{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
