"""The run directory's checkpoint bookkeeping, tested directly: completeness, resume choice, publishing, rotation,
leftovers, metrics truncation and the world-size record. (tests/faults runs the same code under kill -9.)"""

from __future__ import annotations

import json

import pytest

from lookahead.errors import ConfigError
from lookahead.rundir import (
    STAGING_DIR,
    check_world_size,
    checkpoint_step,
    clear_leftovers,
    complete_checkpoints,
    publish_checkpoint,
    resolve_resume,
    rotate_checkpoints,
    truncate_metrics,
    write_checkpoint_info,
)


def checkpoint(folder, step: int, complete: bool = True, weights: str = "adapter_model.safetensors"):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / weights).write_bytes(b"w")
    if complete:  # the Trainer writes trainer_state.json last
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_complete_checkpoints_are_sorted_by_step_and_half_written_ones_left_out(tmp_path):
    for step in (10, 2, 30):
        checkpoint(tmp_path, step)
    checkpoint(tmp_path, 40, complete=False)
    (tmp_path / "checkpoint-50").mkdir()  # no weights, no state
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name
    checkpoint(tmp_path, 60, weights="model.safetensors.index.json")  # sharded full model
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10", "checkpoint-30",
                                                                "checkpoint-60"]  # fmt: skip
    assert complete_checkpoints(tmp_path / "missing") == []
    assert checkpoint_step(tmp_path / "checkpoint-30") == 30


def test_resume_choices(tmp_path):
    assert resolve_resume(tmp_path, None) is None and resolve_resume(tmp_path, "auto") is None  # fresh run dir
    checkpoint(tmp_path, 4)
    newest = checkpoint(tmp_path, 8)
    checkpoint(tmp_path, 12, complete=False)
    with pytest.raises(ConfigError, match=r"already holds checkpoints \(checkpoint-8\); pass resume=auto"):
        resolve_resume(tmp_path, None)
    assert resolve_resume(tmp_path, "auto") == newest
    assert resolve_resume(tmp_path, str(tmp_path / "checkpoint-4")) == tmp_path / "checkpoint-4"
    with pytest.raises(ConfigError, match="not a complete checkpoint folder"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-12"))


def test_publish_replaces_a_checkpoint_of_the_same_name_and_removes_the_staging_folder(tmp_path):
    old = checkpoint(tmp_path, 6)
    (old / "stale.txt").write_text("old")
    staged = checkpoint(tmp_path / STAGING_DIR, 6)
    published = publish_checkpoint(staged, tmp_path)
    assert published == old and not (published / "stale.txt").exists()
    assert not (tmp_path / STAGING_DIR).exists() and not list(tmp_path.glob(".trash-*"))


def test_rotation_keeps_the_newest_and_the_protected_one(tmp_path):
    for step in (1, 2, 3, 4, 5):
        checkpoint(tmp_path, step)
    rotate_checkpoints(tmp_path, keep=2, protect=str(tmp_path / "checkpoint-1"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1", "checkpoint-4", "checkpoint-5"]
    rotate_checkpoints(tmp_path, keep=None)  # no limit: nothing deleted
    assert len(complete_checkpoints(tmp_path)) == 3


def test_leftovers_of_a_killed_run_are_cleared(tmp_path):
    checkpoint(tmp_path / STAGING_DIR, 9)
    (tmp_path / ".trash-checkpoint-3-123").mkdir()
    keep = checkpoint(tmp_path, 3)
    clear_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [keep.name]


def test_metrics_after_the_resumed_step_and_torn_lines_are_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 0, "train/examples": 8}, {"step": 2, "loss": 1.0}, {"step": 4, "loss": 0.9}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 5, "lo')
    truncate_metrics(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 2]
    truncate_metrics(tmp_path / "absent.jsonl", 2)  # nothing to do


def test_world_size_is_recorded_and_another_one_refused(tmp_path):
    ckpt = checkpoint(tmp_path, 2)
    check_world_size(ckpt, 4)  # written before the record existed: accepted
    write_checkpoint_info(ckpt, 2)
    check_world_size(ckpt, 2)
    with pytest.raises(
        ConfigError, match=r"written by 2 process\(es\) and this run has 1; resume with --num_processes 2"
    ):
        check_world_size(ckpt, 1)
