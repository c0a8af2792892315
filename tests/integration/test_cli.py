"""The command lines as users type them: train.py (errors, multirun, accelerate launch), inspect and preview scripts."""

from __future__ import annotations

import csv
import json
import shutil
import sys

import pytest

from lookahead.errors import ConfigError
from lookahead.training.recipe import train
from tests.conftest import (
    ROOT,
    accelerate_two_processes,
    compose,
    generated_data_dir,
    losses,
    python_cli,
    read_metrics,
    run_cli,
    tiny_overrides,
    tokenizer_dir,
)

pytestmark = pytest.mark.slow


def test_multirun_sweep_makes_one_dir_per_job_and_sweep_csv(tmp_path):
    result = python_cli(
        "train.py",
        "-m",
        *tiny_overrides(),
        "trainer.max_steps=2",
        "method=real_prefix",
        "method.m=2,4",
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweeps" / "tiny-arithmetic"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0_tiny-arithmetic-real_prefix-m2-lora", "1_tiny-arithmetic-real_prefix-m4-lora"]
    rows = list(csv.DictReader((sweep / "sweep.csv").open()))
    assert [r["job"] for r in rows] == jobs
    assert "method.m=2" in rows[0]["overrides"] and "method.m=4" in rows[1]["overrides"]
    assert all(float(r["final_loss"]) > 0 and float(r["loss_first_k"]) > 0 for r in rows)


@pytest.mark.skipif(
    shutil.which("accelerate", path=str(ROOT / ".venv" / "bin")) is None and shutil.which("accelerate") is None,
    reason="accelerate CLI not installed",
)
def test_accelerate_two_processes_one_run_dir_and_the_same_losses(tmp_path):
    common = [*tiny_overrides(), "lora=none", "trainer.max_steps=3"]
    two = run_cli(
        [
            *accelerate_two_processes(),
            str(ROOT / "train.py"),
            *common,
            "trainer.per_device_train_batch_size=4",
            "logger=wandb",
            "logger.mode=offline",
            f"paths.log_dir={tmp_path / 'two'}",
        ]
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = python_cli("train.py", *common, "trainer.per_device_train_batch_size=8", f"paths.log_dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-3000:]

    run_dirs = list((tmp_path / "two" / "runs").iterdir())
    assert len(run_dirs) == 1
    metrics = read_metrics(run_dirs[0] / "metrics.jsonl")
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3]  # written once, by the main process
    assert len(list((run_dirs[0] / "wandb").glob("offline-run-*"))) == 1
    one_losses = losses(read_metrics(next((tmp_path / "one" / "runs").iterdir()) / "metrics.jsonl"))
    for step, loss in losses(metrics).items():
        assert loss == pytest.approx(one_losses[step], abs=1e-5)

    # Resuming the 2-process run with 1 process would change the data order and the per-rank RNG states: refused.
    resume_alone = compose([*common, "trainer.max_steps=4", "resume=auto"], output_dir=run_dirs[0])
    with pytest.raises(ConfigError, match=r"by 2 process\(es\) and this run has 1; resume with --num_processes 2"):
        train(resume_alone)


def test_inspect_data_prints_exactly_what_is_trained():
    # WANDB_MODE=offline (common on clusters) makes transformers print a line on stdout when imported: stdout must
    # still hold the JSON lines alone.
    result = python_cli(
        "scripts/inspect_data.py",
        *tiny_overrides("llama3-style"),
        "method=real_prefix",
        "method.m=3",
        "inspect.n=2",
        env_extra={"WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert set(row) >= {"input_ids", "labels", "text", "trained_text"}
        n_prompt = next(i for i, t in enumerate(row["labels"]) if t != -100)
        assert row["labels"][n_prompt:] == row["input_ids"][n_prompt:]
        assert row["trained_text"].endswith("<|eot_id|>")
        assert row["text"].endswith(row["trained_text"])
        assert "The answer begins with: " in row["text"]


def test_preview_data_rewrites_a_file(tmp_path):
    out = tmp_path / "virtual.jsonl"
    result = python_cli(
        "scripts/preview_data.py",
        "--input",
        str(generated_data_dir() / "gsm8k_test.jsonl"),
        "--output",
        str(out),
        "--mode",
        "virtual",
    )
    assert result.returncode == 0, result.stderr
    first = json.loads(out.read_text().splitlines()[0])
    assert first["question"].endswith(" The answer begins with: Let's solve this problem. ")
    assert first["answer"].startswith("Let's solve this problem. ")

    out = tmp_path / "real.json"
    result = python_cli(
        "scripts/preview_data.py",
        "--input",
        str(generated_data_dir() / "gsm8k_test.jsonl"),
        "--output",
        str(out),
        "--mode",
        "real",
        "--m",
        "4",
        "--tokenizer",
        str(tokenizer_dir("llama3-style")),
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert len(rows) == 24 and " The answer begins with: " in rows[0]["question"]


def test_evaluate_writes_no_log_file_into_the_working_directory(tmp_path):
    """Hydra's default job logging opened an empty evaluate.log wherever evaluate.py ran (one was committed)."""
    result = run_cli([sys.executable, str(ROOT / "evaluate.py"), "suite=[nope]"], cwd=tmp_path)
    assert result.returncode == 2 and "error: suite=['nope']" in result.stderr
    assert list(tmp_path.iterdir()) == []
