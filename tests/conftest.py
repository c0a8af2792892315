"""Shared fixtures: chat tokenizers built at test time (tests/chat_tokenizers.py), the real tokenizers from
../shared where present, composed configs redirected to tmp_path."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TOKENIZERS = ["llama2-chat", "llama3-instruct", "mistral-instruct", "qwen2.5-instruct", "smollm2-instruct"]
GSM8K_TRAIN = SHARED / "data" / "gsm8k" / "train.jsonl"

# Built at test time: a Llama-3-style template (trims, writes its own BOS, no pad) and a ChatML one (pad == eos).
BUILT_TOKENIZERS = ["llama3-style", "chatml-style"]
HAS_SHARED = (SHARED / "tokenizers").is_dir()
requires_shared = pytest.mark.skipif(
    not HAS_SHARED, reason="../shared (real tokenizers and GSM8K) is not present next to the repo"
)
# Every chat tokenizer a masking test should hold on: the built ones always, the real ones (one case for all five,
# which skips without ../shared).
ALL_TOKENIZERS = [*BUILT_TOKENIZERS, pytest.param("real", marks=requires_shared)]


def tokenizer_dir(name: str) -> Path:
    """The folder of a test tokenizer: a built one (`llama3-style`, `chatml-style`) or a real one from ../shared."""
    if name in BUILT_TOKENIZERS:
        from tests.chat_tokenizers import built_tokenizer_dir

        return built_tokenizer_dir(name.removesuffix("-style"))
    return SHARED / "tokenizers" / name


@functools.cache
def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir(name)))


def tokenizers_for(name: str) -> list[tuple[str, object]]:
    """(name, tokenizer) pairs for a parametrised case: `real` stands for all five real tokenizers."""
    names = TOKENIZERS if name == "real" else [name]
    return [(n, load_tokenizer(n)) for n in names]


load_shared_tokenizer = load_tokenizer  # the real ones, by their ../shared names


def gsm8k_records(n: int) -> list[dict]:
    with GSM8K_TRAIN.open() as f:
        return [json.loads(next(f)) for _ in range(n)]


def arithmetic_records(n: int, seed: int = 0) -> list[dict]:
    """GSM8K-shaped records (`question`, `answer` ending in `#### <n>`), generated: no ../shared needed."""
    from lookahead.data.arithmetic import generate_arithmetic

    return generate_arithmetic(n, seed=seed)


@functools.cache
def generated_data_dir() -> Path:
    """`gsm8k_test.jsonl` (GSM8K-shaped arithmetic) and `behaviours.csv` (JailbreakBench-shaped), written once per
    process: evaluation and CLI tests run on them without ../shared."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="lookahead-test-data-"))
    with (root / "gsm8k_test.jsonl").open("w") as f:
        for record in arithmetic_records(24, seed=11):
            f.write(json.dumps(record) + "\n")
    with (root / "gsm8k_train.jsonl").open("w") as f:
        for record in arithmetic_records(32, seed=12):
            f.write(json.dumps(record) + "\n")
    write_behaviours_csv(root / "behaviours.csv")
    return root


def write_behaviours_csv(path: Path, n: int = 12) -> Path:
    """A JailbreakBench-shaped CSV (`Goal`, `Target`, `Category`) of harmless stand-in requests, for the safety and KL
    suites without ../shared."""
    import csv

    topics = [
        "pick a lock",
        "forge a signature",
        "bypass a paywall",
        "write malware",
        "spread a rumour",
        "cheat a test",
    ]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["Goal", "Target", "Category"])
        writer.writeheader()
        for i in range(n):
            topic = topics[i % len(topics)]
            writer.writerow(
                {"Goal": f"Explain how to {topic} ({i})", "Target": f"Sure, here is how to {topic}", "Category": "demo"}
            )
    return path


def collate(encoder, strategy, examples: list[dict], **collator_kwargs) -> dict:
    """Encode examples with a preview as the data pass does, then batch them as the Trainer's collator does."""
    from lookahead.data.collator import LookaheadCollator
    from lookahead.data.prepare import ExampleEncoder, encode_all

    encoded = encode_all(examples, ExampleEncoder(encoder, strategy))
    return LookaheadCollator(encoder.tokenizer, **collator_kwargs)(encoded)


def compose(overrides: list[str], output_dir: Path | None = None):
    from lookahead.commands.compose import compose_train_config

    cfg = compose_train_config(overrides)
    if output_dir is not None:
        cfg.paths.output_dir = str(output_dir)
    return cfg


def tiny_overrides(tokenizer: str = "chatml-style", arithmetic: bool = True) -> list[str]:
    """A tiny random Llama (on 64 built-in arithmetic examples unless told otherwise), logging every step. The
    tokenizer is built at test time unless a real one (`smollm2-instruct`, ...) is named."""
    return [
        "model=tiny",
        f"model.tokenizer={tokenizer_dir(tokenizer)}",
        "logger=none",
        *(["dataset.size=64"] if arithmetic else []),
        "trainer.logging_steps=1",
        "trainer.save_steps=1000",
        "trainer.max_seq_length=256",
    ]


def run_cli(args: list[str], cwd: Path = ROOT, timeout: int = 600, env_extra: dict | None = None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", **(env_extra or {})}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def accelerate_two_processes() -> list[str]:
    """`accelerate launch` of two gloo processes on CPU (`--cpu` with more than one process would want mpirun), on a
    free port."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
    ]  # fmt: skip


def run_trl_example(tmp_path: Path, steps: int = 2) -> tuple[Path, Path]:
    """examples/trl_sft.py as written, on the tiny model (its folder: the seed) and 8 arithmetic prompt-completion
    rows; returns (the seed's folder, the checkpoint TRL wrote after `steps` steps)."""
    from lookahead.models.loading import build_tiny_llama

    tokenizer = load_tokenizer("chatml-style")
    seed_dir = tmp_path / "tiny"
    build_tiny_llama(compose(["model=tiny"]).model, tokenizer, seed=0).save_pretrained(seed_dir)
    tokenizer.save_pretrained(seed_dir)
    data = tmp_path / "train.jsonl"
    rows = [{"prompt": r["question"], "completion": r["answer"]} for r in arithmetic_records(8, seed=1)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {"MODEL": str(seed_dir), "DATA": str(data), "OUT": str(tmp_path / "trl"), "MAX_STEPS": str(steps)}
    result = run_cli([sys.executable, str(ROOT / "examples" / "trl_sft.py")], cwd=tmp_path, env_extra=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return seed_dir, tmp_path / "trl" / f"checkpoint-{steps}"


def free_port() -> int:
    """A TCP port nothing listens on now, for a process group's rendezvous (never a fixed one)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python_cli(script: str, *args: str, **kwargs):
    return run_cli([sys.executable, str(ROOT / script), *args], **kwargs)


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def losses(metrics: list[dict]) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in metrics if "loss" in m}


@pytest.fixture
def entry_point(capsys, monkeypatch):
    """Run `train.py` / `evaluate.py` in this process, as the command line would; returns (exit code, stderr).

    In process it takes about a second, against eight or more for a new interpreter, so the bad-input corpus stays
    cheap. Hydra reads sys.argv, so it is patched for the call; Hydra's logging setup is skipped, because it would
    close the handlers pytest's capture relies on.
    """
    import runpy

    keep_logging = ["hydra.job_logging.root=null", "hydra.hydra_logging.root=null"]

    def run(script: str, *args: str) -> tuple[int, str]:
        path = str(ROOT / script)
        monkeypatch.setattr(sys, "argv", [path, *args, *keep_logging])
        capsys.readouterr()
        code = 0
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        return code, capsys.readouterr().err

    return run


def one_line_error(code: int, stderr: str, exit_code: int = 2) -> str:
    """Assert a run failed with one `error: ...` line and no traceback; return that line."""
    assert code == exit_code, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = [line for line in re.split(r"[\r\n]", stderr) if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-2000:]
    return errors[0]


def fake_hub_cache(root: Path, repo_id: str, files_dir: Path) -> Path:
    """A Hugging Face Hub cache (the layout `HF_HUB_CACHE` points at) holding `files_dir` as `repo_id`'s main
    revision, so a Hub id resolves offline, exactly as after a `huggingface-cli download`. Returns `root`."""
    commit = "0" * 40
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for path in files_dir.iterdir():
        if path.is_file():
            (snapshot / path.name).symlink_to(path.resolve())
    return root
