"""The run directory: one per run, the same path on every rank, and resumable from its newest complete checkpoint.

The HF Trainer writes `checkpoint-N` itself. A checkpoint counts as complete only once `CheckpointMarker` (an
`on_save` callback, run after every rank has written its part) has put `lookahead_checkpoint.json` in it; before a
save the marker of a checkpoint about to be overwritten is removed first. So a kill -9 at any point leaves either a
marked, complete checkpoint or an unmarked one, which resume ignores and the next start clears away.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from transformers import TrainerCallback

from lookahead.errors import CheckpointWriteError, ConfigError

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# What the HF Trainer writes into a checkpoint, besides the weights.
_REQUIRED = ("trainer_state.json",)
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json", "pytorch_model_fsdp_0")
# Where earlier versions staged checkpoints; cleared if an old run left one.
LEGACY_STAGING_DIR = ".staging"
# The completion marker, written last: the world size that wrote the checkpoint (RNG files and data order depend
# on it).
CHECKPOINT_INFO = "lookahead_checkpoint.json"
# Keys that may change between a run and its continuation without making it a different run.
_RUN_INDEPENDENT_KEYS = ("resume", "debug", "eval", "paths", "logger", "hydra")


def is_complete_checkpoint(path: Path) -> bool:
    return (
        (path / CHECKPOINT_INFO).is_file()
        and all((path / f).exists() for f in _REQUIRED)
        and any((path / f).exists() for f in _WEIGHTS)
    )


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete `checkpoint-N` folders, oldest first. Half-written ones are logged and left out."""
    found = []
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    for child in run_dir.iterdir():
        match = _CHECKPOINT.match(child.name)
        if not match or not child.is_dir():
            continue
        if is_complete_checkpoint(child):
            found.append((int(match.group(1)), child))
        else:
            log.warning("Ignoring incomplete checkpoint %s", child)
    return [path for _, path in sorted(found)]


def resolve_resume(run_dir: str | Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from, or None to start fresh.

    resume=null refuses to start over a run dir that already holds checkpoints, so no work is overwritten.
    resume=auto picks the newest complete checkpoint (or starts fresh when there is none).
    Anything else is a checkpoint path.
    """
    checkpoints = complete_checkpoints(run_dir)
    if resume in (None, False):
        if checkpoints:
            raise ConfigError(
                f"{run_dir} already holds checkpoints ({checkpoints[-1].name}); pass resume=auto to continue that run, "
                "or run_name=<new name> to start another"
            )
        return None
    if resume == "auto":
        if not checkpoints:
            log.info("resume=auto: no complete checkpoint in %s, starting fresh", run_dir)
            return None
        return checkpoints[-1]
    path = Path(resume)
    if not is_complete_checkpoint(path):
        raise ConfigError(
            f"resume={resume!r}: not a complete checkpoint folder (needs trainer_state.json, weights and "
            f"{CHECKPOINT_INFO}, written last)"
        )
    return path


def checkpoint_step(path: Path) -> int:
    return int(json.loads((path / "trainer_state.json").read_text())["global_step"])


def _readable_record(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:  # the torn last line of a killed run
        return None
    return record if isinstance(record, dict) else None


def truncate_metrics(metrics_path: Path, step: int) -> None:
    """On resume, drop logged records past the checkpoint's step so metrics.jsonl reads as one clean run."""
    if not metrics_path.is_file():
        return
    kept = []
    for line in metrics_path.read_text().splitlines():
        record = _readable_record(line)
        if record is not None and record.get("step", 0) <= step:
            kept.append(line)
    tmp = metrics_path.with_name(metrics_path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, metrics_path)


def write_checkpoint_info(checkpoint: Path, world_size: int) -> None:
    (checkpoint / CHECKPOINT_INFO).write_text(json.dumps({"world_size": world_size}) + "\n")


def check_world_size(checkpoint: Path, world_size: int) -> None:
    """Refuse to resume at another world size: the data order and per-rank RNG states would not carry over."""
    info = checkpoint / CHECKPOINT_INFO
    if not info.is_file():
        return
    saved = int(json.loads(info.read_text())["world_size"])
    if saved != world_size:
        raise ConfigError(
            f"{checkpoint} was written by {saved} process(es) and this run has {world_size}; resume with "
            f"--num_processes {saved}, or start a new run (run_name=<new name>) from its weights"
        )


def _discard(path: Path) -> None:
    """Delete a folder by renaming it away first, so a crash mid-delete never leaves a plausible half folder."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def rotate_checkpoints(run_dir: Path, keep: int | None, protect: str | None = None) -> None:
    """Keep the newest `keep` complete checkpoints (and `protect`, e.g. the best one); delete older ones."""
    if not keep or keep <= 0:
        return
    checkpoints = complete_checkpoints(run_dir)
    protected = Path(protect).resolve() if protect else None
    for old in checkpoints[:-keep]:
        if old.resolve() != protected:
            _discard(old)


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    return [
        p
        for p in run_dir.glob("checkpoint-*")
        if _CHECKPOINT.match(p.name) and p.is_dir() and not is_complete_checkpoint(p)
    ]


def clear_leftovers(run_dir: Path) -> None:
    """Remove what a killed run left half-done: an unmarked checkpoint, a folder being deleted."""
    for leftover in [run_dir / LEGACY_STAGING_DIR, *run_dir.glob(".trash-*"), *incomplete_checkpoints(run_dir)]:
        if leftover.exists():
            log.warning("Removing %s left by an interrupted run", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def unmark(checkpoint: Path) -> None:
    """Make a checkpoint incomplete before it is overwritten, so a crash mid-write never leaves it marked."""
    (checkpoint / CHECKPOINT_INFO).unlink(missing_ok=True)


class CheckpointMarker(TrainerCallback):
    """Marks each checkpoint complete after the Trainer (every rank) has written it, then rotates old ones.

    Rotation is here, not in the Trainer (`save_total_limit` is handed to this callback), so it runs only after the
    new checkpoint is marked and never removes the best checkpoint (`state.best_model_checkpoint`).
    """

    def __init__(self, trainer: Any, keep: int | None):
        self.trainer = trainer
        self.keep = keep

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if control.should_save and args.should_save:
            target = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if target.exists():
                unmark(target)
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        accelerator = self.trainer.accelerator
        accelerator.wait_for_everyone()  # every rank has written its part (RNG state, shards)
        if args.should_save:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_checkpoint_info(checkpoint, accelerator.num_processes)
            rotate_checkpoints(Path(args.output_dir), self.keep, state.best_model_checkpoint)
        accelerator.wait_for_everyone()
        return control


def raise_checkpoint_write_error(error: Exception, run_dir: Path, step: int, should_save: bool) -> None:
    """If `error` came while `checkpoint-<step>` was being written, discard that half checkpoint and raise one clear
    CheckpointWriteError naming the checkpoint that is intact; otherwise return (the caller re-raises)."""
    half = Path(run_dir) / f"checkpoint-{step}"
    if not half.is_dir() or is_complete_checkpoint(half):
        return
    if should_save:
        shutil.rmtree(half, ignore_errors=True)
    last = complete_checkpoints(run_dir)
    kept = f"{last[-1].name} is intact" if last else "there is no earlier checkpoint"
    reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    raise CheckpointWriteError(
        f"could not write {half.name} in {run_dir} ({reason}); {kept}. Free space or fix permissions, then resume=auto"
    ) from error


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _run_defining(config_yaml: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.create(config_yaml)) or {}
    return _flatten({k: v for k, v in config.items() if k not in _RUN_INDEPENDENT_KEYS})


def config_changes(saved_yaml: str, current_yaml: str, shared_only: bool = False) -> list[str]:
    """`key: old -> new` for every run-defining key that differs between a saved config and the current one.
    `shared_only`: compare only the keys both hold, so a key another version of the code added or dropped (with its
    default) is not a change."""
    saved, now = _run_defining(saved_yaml), _run_defining(current_yaml)
    keys = sorted(saved.keys() & now.keys() if shared_only else saved.keys() | now.keys())
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]


def shown_changes(changes: list[str], most: int = 3) -> str:
    """The first `most` of `config_changes`' lines for a one-line message, and how many more there are."""
    return "; ".join(changes[:most]) + (f"; and {len(changes) - most} more" if len(changes) > most else "")


def check_same_run(run_dir: Path, current_yaml: str, resuming: bool, config_file: str = "config.yaml") -> None:
    """A run dir belongs to one run: refuse a different config where a run saved work, unless resuming.

    A run that failed before saving anything (bad data, out of memory at step 1) leaves nothing to protect, so a
    corrected config may start there.
    """
    saved = run_dir / config_file
    saved_work = (run_dir / "final").exists() or any(_CHECKPOINT.match(p.name) for p in run_dir.glob("checkpoint-*"))
    if not saved.is_file() or not saved_work:
        return
    changes = config_changes(saved.read_text(), current_yaml)
    if not changes:
        return
    shown = shown_changes(changes)
    if resuming:
        log.warning("Resuming %s with a changed config: %s", run_dir, shown)
        return
    raise ConfigError(
        f"{run_dir} holds a different run's config ({shown}); pass run_name=<new name> to start another run, "
        "or resume=auto to continue that one"
    )


def require_writable(folder: str | Path) -> None:
    """Create `folder` and prove it takes a file; otherwise print one line and exit 2, before any work starts."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        print(
            f"error: output dir {folder} is not writable ({e.strerror or e}); set paths.log_dir=<a writable folder>",
            file=sys.stderr,
        )
        sys.exit(2)


class WritableOutputDir(Callback):
    """Hydra callback: check the run (or sweep) dir before Hydra writes into it, so the error is one clear line."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        require_writable(config.hydra.run.dir)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        require_writable(config.hydra.sweep.dir)
