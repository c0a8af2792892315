"""Injected faults: kill -9 at random steps, SIGTERM, a NaN loss, a full disk, a half-written checkpoint.

Each fault must lose no more than the steps since the last checkpoint, and the continued run must end exactly
where an uninterrupted run with the same seed ends: same final loss, same weights (within 1e-5).
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lookahead.errors import CheckpointWriteError, ConfigError, TrainingDiverged
from lookahead.objectives.loss import AnswerTokenLoss
from lookahead.training.checkpoints import complete_checkpoints, incomplete_checkpoints
from lookahead.training.recipe import train
from tests.conftest import ROOT, compose, losses, one_line_error, read_metrics, tiny_overrides

pytestmark = pytest.mark.slow

STEPS = 8
RUN = "tiny-arithmetic-virtual_prefix-lora"
# Checkpoints every 2 steps, all kept, so any kill point has one to continue from (or none before step 2). A wider
# tiny model than usual, so a step takes long enough for the kills to land inside the run.
COMMON = [
    *tiny_overrides(), "model.tiny.hidden_size=256", "model.tiny.intermediate_size=1024",
    "model.tiny.num_hidden_layers=4", f"trainer.max_steps={STEPS}", "trainer.save_steps=2",
    "trainer.save_total_limit=null",
]  # fmt: skip
ADAPTER = "final/adapter_model.safetensors"


def run_in_process(run_dir: Path, *extra: str) -> dict:
    return train(compose([*COMMON, *extra], output_dir=run_dir))


def start_cli(log_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, str(ROOT / "train.py"), *COMMON, f"paths.log_dir={log_dir}"]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc: subprocess.Popen, metrics: Path, step: int, timeout: float = 300) -> int:
    """Poll metrics.jsonl until the run has logged `step`; returns the last logged step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before step {step}: {proc.stderr.read()[-2000:]}"
        if metrics.is_file():
            lines = metrics.read_text().splitlines()
            logged = [json.loads(line).get("step", 0) for line in lines if line.endswith("}")]
            if logged and max(logged) >= step:
                return max(logged)
        time.sleep(0.02)
    raise TimeoutError(f"step {step} not reached")


def assert_same_end(run_dir: Path, reference: Path) -> None:
    ref_losses, got = losses(read_metrics(reference / "metrics.jsonl")), read_metrics(run_dir / "metrics.jsonl")
    steps = [m["step"] for m in got if "loss" in m]
    assert steps == list(range(1, STEPS + 1)), steps  # every step logged exactly once
    assert losses(got)[STEPS] == pytest.approx(ref_losses[STEPS], abs=1e-5)
    want, have = load_file(reference / ADAPTER), load_file(run_dir / ADAPTER)
    assert want.keys() == have.keys()
    for key in want:
        torch.testing.assert_close(have[key], want[key], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / RUN
    run_in_process(run_dir)
    return run_dir


def test_kill_9_at_three_random_points_then_resume_auto_ends_like_an_uninterrupted_run(reference, tmp_path):
    rng = random.Random(int(os.environ.get("LOOKAHEAD_FAULT_SEED", "20261128")))
    points = sorted(rng.sample(range(1, STEPS), 3))
    for point in points:
        log_dir = tmp_path / f"kill-at-{point}"
        run_dir = log_dir / "runs" / RUN
        proc = start_cli(log_dir)
        wait_for_step(proc, run_dir / "metrics.jsonl", point)
        time.sleep(rng.uniform(0, 0.3))  # land anywhere in the step: forward, backward, or a checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL

        survivors = complete_checkpoints(run_dir)
        summary = run_in_process(run_dir, "resume=auto")
        assert summary["global_step"] == STEPS, (point, survivors)
        assert incomplete_checkpoints(run_dir) == []  # every checkpoint-N left is marked complete
        assert_same_end(run_dir, reference)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_saves_a_checkpoint_and_exits_then_resumes(reference, tmp_path, signum):
    run_dir = tmp_path / "runs" / RUN
    proc = start_cli(tmp_path)
    wait_for_step(proc, run_dir / "metrics.jsonl", 3)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped: ")]
    assert proc.returncode == 128 + signum, stderr[-2000:]
    assert "Traceback" not in stderr and len(stopped) == 1
    step = json.loads((complete_checkpoints(run_dir)[-1] / "trainer_state.json").read_text())["global_step"]
    assert 3 <= step < STEPS  # the step it was in when the signal came, saved even off the save_steps grid
    assert stopped[0] == (
        f"stopped: stopped by {signum.name} at step {step}; saved {run_dir / f'checkpoint-{step}'}; "
        "continue with resume=auto"
    )
    assert not (run_dir / "final").exists()

    run_in_process(run_dir, "resume=auto")
    assert_same_end(run_dir, reference)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, entry_point):
    real_call, calls = AnswerTokenLoss.__call__, []

    def nan_at_step_5(self, outputs, labels, num_items_in_batch=None, **arguments):
        loss = real_call(self, outputs, labels, num_items_in_batch, **arguments)
        calls.append(1)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(AnswerTokenLoss, "__call__", nan_at_step_5)
    code, err = entry_point("train.py", *COMMON, f"paths.log_dir={tmp_path}")
    run_dir = tmp_path / "runs" / RUN
    assert one_line_error(code, err) == (
        f"error: the loss became NaN or inf at step 5; stopped without saving that step, the last good checkpoint is "
        f"{run_dir / 'checkpoint-4'}. Lower trainer.learning_rate, check the data, or use bf16 instead of fp16, then "
        "resume=auto"
    )
    assert [p.name for p in complete_checkpoints(run_dir)] == ["checkpoint-2", "checkpoint-4"]
    assert not (run_dir / "final").exists()
    assert max(m["step"] for m in read_metrics(run_dir / "metrics.jsonl")) == 4  # step 5 never logged
    calls.clear()
    with pytest.raises(TrainingDiverged, match="at step 5"):  # the same error from the library call
        run_in_process(tmp_path / "again")


def test_disk_full_while_saving_keeps_the_previous_checkpoint(reference, tmp_path, monkeypatch):
    run_dir = tmp_path / RUN
    real_save = torch.save

    def full_disk_at_checkpoint_4(obj, f, *args, **kwargs):
        if "checkpoint-4" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_at_checkpoint_4)
    with pytest.raises(CheckpointWriteError) as failure:
        run_in_process(run_dir)
    assert str(failure.value) == (
        f"could not write checkpoint-4 in {run_dir} (OSError: [Errno 28] No space left on device); checkpoint-2 is "
        "intact. Free space or fix permissions, then resume=auto"
    )
    assert [p.name for p in complete_checkpoints(run_dir)] == ["checkpoint-2"]
    assert not (run_dir / "checkpoint-4").exists()  # the half-written checkpoint is gone

    monkeypatch.setattr(torch, "save", real_save)  # space freed
    run_in_process(run_dir, "resume=auto")
    assert_same_end(run_dir, reference)


def test_half_written_checkpoint_and_torn_metrics_line_are_skipped(reference, tmp_path):
    run_dir = tmp_path / RUN
    run_in_process(run_dir)
    # What a kill -9 during step 6 can leave: a checkpoint folder without its state or its marker, a torn last
    # metrics line; everything after step 4 is lost.
    for lost in ("checkpoint-6", "checkpoint-8", "final"):
        shutil.rmtree(run_dir / lost)
    (run_dir / "checkpoint-6").mkdir()
    (run_dir / "checkpoint-6" / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    kept = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 5]
    (run_dir / "metrics.jsonl").write_text("\n".join(kept) + '\n{"step": 6, "loss": 1.2')
    assert [p.name for p in complete_checkpoints(run_dir)] == ["checkpoint-2", "checkpoint-4"]

    run_in_process(run_dir, "resume=auto")
    assert incomplete_checkpoints(run_dir) == []
    assert_same_end(run_dir, reference)


def test_resume_at_another_world_size_is_refused(tmp_path):
    run_dir = tmp_path / RUN
    run_in_process(run_dir, "trainer.max_steps=2")
    info = run_dir / "checkpoint-2" / "lookahead_checkpoint.json"
    assert json.loads(info.read_text()) == {"world_size": 1}
    info.write_text(json.dumps({"world_size": 2}))  # as `accelerate launch --num_processes 2` writes it
    with pytest.raises(ConfigError, match=r"was written by 2 process\(es\) and this run has 1; resume with"):
        run_in_process(run_dir, "resume=auto")


def test_resume_from_the_last_checkpoint_of_a_finished_run_trains_no_extra_step(reference, tmp_path):
    """Killed after the checkpoint at max_steps but before final/: the Trainer alone would train one step more."""
    run_dir = tmp_path / RUN
    shutil.copytree(reference, run_dir)
    for lost in ("final", "summary.json"):
        path = run_dir / lost
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    summary = run_in_process(run_dir, "resume=auto")
    assert summary["global_step"] == STEPS
    assert_same_end(run_dir, reference)
