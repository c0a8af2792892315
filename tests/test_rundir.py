"""The run directory's checkpoint bookkeeping, tested directly: the completion marker, resume choice, rotation,
leftovers, metrics truncation, the world-size record and the write-error message. (tests/faults runs the same code
under kill -9.)"""

from __future__ import annotations

import json

import pytest

from lookahead.errors import ConfigError
from lookahead.training.checkpoints import (
    CHECKPOINT_INFO,
    LEGACY_STAGING_DIR,
    check_world_size,
    checkpoint_step,
    clear_leftovers,
    complete_checkpoints,
    raise_checkpoint_write_error,
    resolve_resume,
    rotate_checkpoints,
    truncate_metrics,
    unmark,
    write_checkpoint_info,
)


def checkpoint(folder, step: int, complete: bool = True, weights: str = "adapter_model.safetensors", marked=True):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / weights).write_bytes(b"w")
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        if marked:  # the on_save callback writes the marker last
            write_checkpoint_info(path, 1)
    return path


def test_complete_checkpoints_are_sorted_by_step_and_half_written_ones_left_out(tmp_path):
    for step in (10, 2, 30):
        checkpoint(tmp_path, step)
    checkpoint(tmp_path, 40, complete=False)
    (tmp_path / "checkpoint-50").mkdir()  # no weights, no state
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name
    checkpoint(tmp_path, 60, weights="model.safetensors.index.json")  # sharded full model
    checkpoint(tmp_path, 70, marked=False)  # everything written but the marker: killed before on_save
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


def test_unmarking_makes_a_checkpoint_incomplete_before_it_is_overwritten(tmp_path):
    path = checkpoint(tmp_path, 6)
    assert complete_checkpoints(tmp_path) == [path]
    unmark(path)
    assert not (path / CHECKPOINT_INFO).exists() and complete_checkpoints(tmp_path) == []
    unmark(path)  # twice is harmless


def test_a_failed_write_discards_the_half_checkpoint_and_names_the_intact_one(tmp_path):
    checkpoint(tmp_path, 2)
    half = checkpoint(tmp_path, 4, marked=False)
    error = OSError(28, "No space left on device")
    with pytest.raises(Exception) as failure:
        raise_checkpoint_write_error(error, tmp_path, 4, should_save=True)
    assert str(failure.value) == (
        f"could not write checkpoint-4 in {tmp_path} (OSError: [Errno 28] No space left on device); checkpoint-2 is "
        "intact. Free space or fix permissions, then resume=auto"
    )
    assert type(failure.value).__name__ == "CheckpointWriteError" and failure.value.__cause__ is error
    assert not half.exists()
    raise_checkpoint_write_error(ValueError("not a save"), tmp_path, 3, should_save=True)  # no half folder: returns


def test_rotation_keeps_the_newest_and_the_protected_one(tmp_path):
    for step in (1, 2, 3, 4, 5):
        checkpoint(tmp_path, step)
    rotate_checkpoints(tmp_path, keep=2, protect=str(tmp_path / "checkpoint-1"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1", "checkpoint-4", "checkpoint-5"]
    rotate_checkpoints(tmp_path, keep=None)  # no limit: nothing deleted
    assert len(complete_checkpoints(tmp_path)) == 3


def test_leftovers_of_a_killed_run_are_cleared(tmp_path):
    checkpoint(tmp_path / LEGACY_STAGING_DIR, 9)
    checkpoint(tmp_path, 5, marked=False)
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
    ckpt = checkpoint(tmp_path, 2, marked=False)
    check_world_size(ckpt, 4)  # no record (a resume= path from elsewhere): accepted
    write_checkpoint_info(ckpt, 2)
    check_world_size(ckpt, 2)
    with pytest.raises(
        ConfigError, match=r"written by 2 process\(es\) and this run has 1; resume with --num_processes 2"
    ):
        check_world_size(ckpt, 1)
