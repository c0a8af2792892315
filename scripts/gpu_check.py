"""The GPU verdict: every path a CPU cannot run, executed and asserted on a CUDA machine, in a fresh output folder.

    bash scripts/gpu_check.sh            # on a GPU machine, after `make setup` with a CUDA torch (about 8 min, H100)
    bash scripts/gpu_check.sh --dry-run  # on any machine: every step a CPU can run, on the tiny model

Each check prints PASS, FAIL or SKIP with its reason; the exit code is 1 when any check failed. Every training
command is composed and validated first, in both modes, so a removed spelling fails at once.

  compose       every command below composes and validates
  chunked       chunked answer-only head = full logits (loss and gradients): bf16 LoRA, QLoRA, bf16 full
  train         10 steps each of lora, qlora, and full + constrained_sft: finite, falling loss
  resume        a run resumed from its mid checkpoint ends at the uninterrupted run's loss
  launchers     accelerate launch --num_processes 1 with fsdp.yaml (and zero2 / zero3 with deepspeed): final/ weights
  guards        safe_lora and asft, 3 steps each, against an aligned / base pair made here
  evaluate      evaluation with the transformers backend and with vLLM (when installed); the seed's answers differ
                from the run's
  throughput    tokens/s and peak GPU memory, ours against TRL's SFTTrainer, same 20 steps (CUDA and trl only)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKS: list[tuple[str, bool, Callable]] = []  # (name, needs CUDA, function)


def check(name: str, needs_cuda: bool = False):
    def register(fn):
        CHECKS.append((name, needs_cuda, fn))
        return fn

    return register


class CheckFailed(AssertionError):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@dataclass
class Context:
    out: Path
    dry_run: bool
    python: str = sys.executable
    extra: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def model(self) -> list[str]:
        """SmolLM2-135M in bf16 on a GPU; the tiny random Llama (SmolLM2's tokenizer) in fp32 on a CPU, whose bf16
        matmuls run without bf16 units (10 steps: 41 s against 12 in fp32; the suite's precision tests train bf16 on
        CPU). The chunked check keeps bf16 weights either way."""
        if self.dry_run:
            return ["model=tiny", "model.dtype=float32", "dataset.size=64"]
        return ["model=smollm2", "model.dtype=bfloat16", "trainer.bf16=true", "dataset.size=256"]

    def train_args(self, name: str, *overrides: str) -> list[str]:
        return [
            *self.model, "logger=none", "trainer.logging_steps=1", "trainer.save_steps=100000",
            "trainer.per_device_train_batch_size=8", "trainer.max_seq_length=256", f"paths.log_dir={self.out}",
            f"run_name={name}", *overrides, *self.extra,
        ]  # fmt: skip

    def run(self, args: list[str], timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", **(env or {})}
        result = subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise CheckFailed(f"`{' '.join(args[:6])} ...` exited {result.returncode}: {result.stderr[-1500:]}")
        return result

    def train(self, name: str, *overrides: str, launcher: list[str] | None = None) -> Path:
        self.run([*(launcher or [self.python]), str(ROOT / "train.py"), *self.train_args(name, *overrides)])
        return self.out / "runs" / name


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if '"loss"' in line]


def assert_falling(run_dir: Path) -> str:
    got = losses(run_dir)
    expect(len(got) >= 6 and all(math.isfinite(v) for v in got), f"{run_dir.name}: losses {got}")
    first, last = sum(got[:3]) / 3, sum(got[-3:]) / 3
    expect(last < first, f"{run_dir.name}: loss did not fall ({first:.4f} -> {last:.4f}): {got}")
    return f"{first:.3f} -> {last:.3f}"


TRAIN_RUNS = {
    "lora": ["lora=lora", "trainer.learning_rate=1e-3"],
    "qlora": ["lora=qlora", "trainer.learning_rate=1e-3"],
    "full-constrained": ["lora=none", "objective=constrained_sft", "trainer.learning_rate=5e-5"],
}


def planned_commands(ctx: Context) -> list[list[str]]:
    """Every training command this check runs, for `compose`."""
    steps = ["trainer.max_steps=10"]
    commands = [ctx.train_args(f"train-{k}", *v, *steps) for k, v in TRAIN_RUNS.items()]
    commands += [ctx.train_args("resume", "lora=lora", "trainer.max_steps=6", "trainer.save_steps=3")]
    commands += [
        ctx.train_args(f"guard-{g}", "lora=lora", f"guard={g}", "guard.aligned_model=a", "guard.base_model=b")
        for g in GUARDS
    ]
    commands += [ctx.train_args("fsdp", "lora=none", "trainer.max_steps=3")]
    commands += [ctx.train_args("eval-lora", "lora=lora", "trainer.learning_rate=5e-2", "trainer.max_steps=10")]
    return commands


@check("compose")
def compose_all(ctx: Context) -> str:
    from lookahead.commands.compose import compose_train_config
    from lookahead.training.config import validate

    commands = planned_commands(ctx)
    for args in commands:
        validate(compose_train_config(args))  # a removed spelling (method=constrained_sft) stops here
    return f"{len(commands)} commands"


def chunked_against_full(ctx: Context, lora: str) -> str:
    import torch

    from lookahead.commands.compose import compose_train_config
    from lookahead.models.loading import load_model
    from lookahead.models.lora import apply_lora
    from lookahead.objectives.chunked_head import capture_hidden
    from lookahead.objectives.loss import AnswerTokenLoss
    from lookahead.training.recipe import build_data

    cfg = compose_train_config(ctx.train_args("chunked", f"lora={lora}", "model.dtype=bfloat16"))
    from lookahead.models.loading import resolve_model_path

    path = resolve_model_path(cfg.model, cfg.paths.cache_dir)
    data = build_data(cfg, path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = apply_lora(load_model(cfg.model, path, data.tokenizer, cfg.lora, seed=0, local_rank=0), cfg.lora, False)
    if not cfg.lora.get("load_in_4bit"):
        model.to(device)
    model.eval()
    with torch.no_grad():  # move the adapter off zero so its gradients are not trivially equal
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    batch = {k: v.to(device) for k, v in data.collator(data.train[:8]).items() if hasattr(v, "to")}
    labels = batch.pop("labels")
    n = int((labels[:, 1:] != -100).sum())
    results = []
    for chunk in (0, 64):
        model.zero_grad()
        loss_fn = AnswerTokenLoss(5, chunk_tokens=chunk)
        with torch.autocast(device, dtype=torch.bfloat16):
            if chunk:
                with capture_hidden(model) as (capture, head):
                    outputs = model(**batch, use_cache=False, logits_to_keep=1)
                loss = loss_fn(outputs, labels, num_items_in_batch=n, hidden=(capture.pop(), head))
            else:
                loss = loss_fn(model(**batch, use_cache=False), labels, num_items_in_batch=n)
        loss.backward()
        grads = {
            k: p.grad.float().clone() for k, p in model.named_parameters() if p.requires_grad and p.grad is not None
        }
        results.append((loss.detach().item(), grads))
    (full, full_grads), (chunked, chunked_grads) = results
    expect(math.isfinite(full) and abs(full - chunked) <= 2e-2 * max(1.0, abs(full)), f"loss {chunked} vs {full}")
    expect(full_grads.keys() == chunked_grads.keys() and full_grads, "different gradient sets")
    worst = max(float((chunked_grads[k] - full_grads[k]).norm() / (full_grads[k].norm() + 1e-12)) for k in full_grads)
    expect(worst <= 0.05, f"gradients differ: worst relative difference {worst:.3g}")
    return f"loss {full:.4f} vs {chunked:.4f}, worst gradient difference {worst:.2g}"


@check("chunked")
def chunked(ctx: Context) -> str:
    return "; ".join(f"{lora}: {chunked_against_full(ctx, lora)}" for lora in ("lora", "qlora", "none"))


@check("train")
def train_runs(ctx: Context) -> str:
    return "; ".join(
        f"{k} {assert_falling(ctx.train(f'train-{k}', *v, 'trainer.max_steps=10'))}" for k, v in TRAIN_RUNS.items()
    )


@check("resume")
def resume(ctx: Context) -> str:
    whole = ctx.train("resume", "lora=lora", "trainer.max_steps=6", "trainer.save_steps=3")
    cut = ctx.out / "runs" / "resume-cut"
    shutil.copytree(whole, cut)
    for leftover in ("checkpoint-6", "final", "summary.json"):
        shutil.rmtree(cut / leftover, ignore_errors=True)
        (cut / leftover).unlink(missing_ok=True)
    expect((cut / "checkpoint-3").is_dir(), "no checkpoint-3 to resume from")
    ctx.train("resume-cut", "lora=lora", "trainer.max_steps=6", "trainer.save_steps=3", "resume=auto")
    a, b = losses(whole)[-1], losses(cut)[-1]
    tolerance = 1e-5 if ctx.dry_run else 2e-2  # CUDA kernels are not bitwise deterministic
    expect(abs(a - b) <= tolerance * max(1.0, abs(a)), f"final loss {b} after resuming, {a} uninterrupted")
    return f"final loss {a:.5f} uninterrupted, {b:.5f} resumed"


LAUNCHERS = {"fsdp": "fsdp.yaml", "zero2": "deepspeed_zero2.yaml", "zero3": "deepspeed_zero3.yaml"}


@check("launchers", needs_cuda=True)
def launchers(ctx: Context) -> str:
    import importlib.util

    done = []
    for name, config in LAUNCHERS.items():
        if name.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
            ctx.notes.append(f"launchers: {name} skipped (deepspeed not installed)")
            continue
        launcher = [ctx.python, "-m", "accelerate.commands.launch", "--config_file",
                    str(ROOT / "configs" / "accelerate" / config), "--num_processes", "1"]  # fmt: skip
        run_dir = ctx.train(name, "lora=none", "trainer.max_steps=3", launcher=launcher)
        final = run_dir / "final"
        weights = list(final.glob("model*.safetensors")) + list(final.glob("model.safetensors.index.json"))
        expect(bool(weights), f"{name}: final/ holds no weights ({sorted(p.name for p in final.iterdir())})")
        done.append(f"{name}: {len(weights)} weight file(s)")
    return "; ".join(done)


GUARDS = ("safe_lora", "asft")


def aligned_pair(ctx: Context) -> tuple[str, str]:
    """(aligned, base): the model under test as the aligned model, and a copy of it moved off by a low-rank V."""
    import torch

    from lookahead.commands.compose import compose_train_config
    from lookahead.models.loading import load_model, load_tokenizer, resolve_model_path

    cfg = compose_train_config(ctx.train_args("pair"))
    path = resolve_model_path(cfg.model, cfg.paths.cache_dir)
    tokenizer = load_tokenizer(cfg.model, path)
    aligned = load_model(cfg.model, path, tokenizer, cfg.lora, seed=cfg.trainer.seed, local_rank=0)
    folder = ctx.out / "pair"
    aligned.save_pretrained(folder / "aligned")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in aligned.named_parameters():
            if name.endswith("proj.weight"):
                u = torch.randn(p.shape[0], 4, generator=generator)
                v = torch.randn(4, p.shape[1], generator=generator)
                p -= (0.01 * u @ v).to(p.dtype)
    aligned.save_pretrained(folder / "base")
    return str(folder / "aligned"), str(folder / "base")


@check("guards")
def guards(ctx: Context) -> str:
    aligned, base = aligned_pair(ctx)
    done = []
    for guard in GUARDS:
        run_dir = ctx.train(
            f"guard-{guard}", "lora=lora", f"guard={guard}", f"guard.aligned_model={aligned}",
            f"guard.base_model={base}", "trainer.max_steps=3", "trainer.learning_rate=1e-3",
        )  # fmt: skip
        got = losses(run_dir)
        expect(len(got) == 3 and all(map(math.isfinite, got)), f"{guard}: losses {got}")
        expect((run_dir / "final" / "adapter_model.safetensors").is_file(), f"{guard}: no adapter in final/")
        done.append(f"{guard} {got[0]:.3f} -> {got[-1]:.3f}")
    return "; ".join(done)


def evaluation_data(ctx: Context) -> Path:
    from lookahead.data.arithmetic import generate_arithmetic

    path = ctx.out / "eval-data" / "gsm8k_test.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in generate_arithmetic(16, seed=11)))
    return path


@check("evaluate")
def evaluate(ctx: Context) -> str:
    import importlib.util

    import torch

    if ctx.dry_run:  # the tiny random model: a large step, so 10 steps change its greedy answers
        run_dir = ctx.train("eval-lora", "lora=lora", "trainer.learning_rate=5e-2", "trainer.max_steps=10")
    else:
        run_dir = ctx.out / "runs" / "train-lora"
        if not (run_dir / "final").is_dir():
            ctx.train("train-lora", *TRAIN_RUNS["lora"], "trainer.max_steps=10")
    data = evaluation_data(ctx)
    backends = ["transformers"]
    if torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None:
        backends.append("vllm")
    else:
        ctx.notes.append("evaluate: vllm skipped (needs CUDA and `pip install vllm`)")
    done = []
    for backend in backends:
        out = ctx.out / f"eval-{backend}"
        ctx.run([ctx.python, str(ROOT / "evaluate.py"), f"run_dir={run_dir}", "suite=[gsm8k]", f"gsm8k.path={data}",
                 "gsm8k.max_new_tokens=32", f"generation.backend={backend}", f"out_dir={out}", "model_card=false",
                 f"seed_cache_dir={ctx.out / f'seed-cache-{backend}'}"])  # fmt: skip
        run_rows = [json.loads(line) for line in (out / "gsm8k.jsonl").read_text().splitlines()]
        seed_rows = [json.loads(line) for line in (out / "seed" / "gsm8k.jsonl").read_text().splitlines()]
        differ = sum(a["generation"] != b["generation"] for a, b in zip(run_rows, seed_rows))
        expect(len(run_rows) == len(seed_rows) == 16, f"{backend}: {len(run_rows)} / {len(seed_rows)} rows")
        expect(differ > 0, f"{backend}: the seed's answers equal the fine-tuned run's on all 16 prompts")
        done.append(f"{backend}: seed differs on {differ} of 16")
    return "; ".join(done)


THROUGHPUT = """
import json, sys, time, torch
from lookahead.commands.compose import compose_train_config
impl, overrides, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
cfg = compose_train_config(overrides)
cfg.paths.output_dir = out
torch.cuda.reset_peak_memory_stats()
if impl == "lookahead":
    from lookahead.training.recipe import train
    summary = train(cfg)
    tok_s = summary["data"]["train/tokens"] / summary["train_seconds"]
else:
    import datasets
    from trl import SFTConfig, SFTTrainer
    from lookahead.data.sources import load_examples
    from lookahead.models.loading import load_model, load_tokenizer, resolve_model_path
    path = resolve_model_path(cfg.model, cfg.paths.cache_dir)
    tokenizer = load_tokenizer(cfg.model, path)
    rows = [{"prompt": e["messages"][:-1], "completion": e["messages"][-1:]} for e in load_examples(cfg.dataset)]
    model = load_model(cfg.model, path, tokenizer, cfg.lora, seed=0, local_rank=0)
    from peft import LoraConfig
    args = SFTConfig(output_dir=out, max_length=256, per_device_train_batch_size=8, max_steps=20, bf16=True,
                     learning_rate=2e-4, logging_steps=1000, save_strategy="no", report_to=[],
                     completion_only_loss=True)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")
    trainer = SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=lora)
    seen = sum(len(ids) for ids in trainer.train_dataset["input_ids"][:160])
    tok_s = seen / trainer.train().metrics["train_runtime"]
print(json.dumps({"tok_s": tok_s, "peak_gb": torch.cuda.max_memory_allocated() / 1024**3}))
"""


@check("throughput", needs_cuda=True)
def throughput(ctx: Context) -> str:
    import importlib.util

    overrides = ctx.train_args("throughput", "lora=lora", "trainer.max_steps=20", "dataset.size=160")
    impls = ["lookahead"] + (["trl"] if importlib.util.find_spec("trl") else [])
    rows = {}
    for impl in impls:
        out = ctx.run([ctx.python, "-c", THROUGHPUT, impl, json.dumps(overrides), str(ctx.out / f"tp-{impl}")])
        rows[impl] = json.loads(out.stdout.strip().splitlines()[-1])
    if "trl" not in rows:
        ctx.notes.append("throughput: TRL skipped (pip install trl)")
    return "; ".join(f"{k} {v['tok_s']:.0f} tokens/s, peak {v['peak_gb']:.2f} GB" for k, v in rows.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="run every step a CPU can run, on the tiny model")
    parser.add_argument("--out", type=Path, help="a fresh folder (default: outputs/gpu_check/<time>)")
    parser.add_argument("--only", nargs="*", help="run these checks only")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every training command")
    args = parser.parse_args()
    import torch

    out = args.out or ROOT / "outputs" / "gpu_check" / time.strftime("%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        print(f"error: {out} is not empty: the check runs in a fresh folder, so a rerun cannot pass on old results")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("error: no CUDA GPU: run with --dry-run for the steps a CPU can run")
        return 2
    ctx = Context(out=out, dry_run=args.dry_run, extra=list(args.extra))
    device = torch.cuda.get_device_name(0) if cuda else "CPU"
    print(f"gpu_check: torch {torch.__version__}, {device}, {'dry run' if args.dry_run else 'full'}, out {out}")
    failed, started = [], time.time()
    for name, needs_cuda, fn in CHECKS:
        if args.only and name not in args.only:
            continue
        if needs_cuda and not cuda:
            print(f"SKIP {name}: needs CUDA", flush=True)
            continue
        t = time.time()
        try:
            detail = fn(ctx)
            print(f"PASS {name} ({time.time() - t:.0f} s): {detail}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported and counted, then the next check runs
            failed.append(name)
            print(f"FAIL {name} ({time.time() - t:.0f} s): {e}", flush=True)
            if not isinstance(e, CheckFailed):
                traceback.print_exc()
        if cuda:
            torch.cuda.empty_cache()
    for note in ctx.notes:
        print(f"note: {note}")
    print(f"gpu_check: {len(failed)} failed ({', '.join(failed) or 'none'}) in {time.time() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
