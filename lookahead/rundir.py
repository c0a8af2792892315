"""The run directory: one per run, the same path on every rank, and resumable from its newest complete checkpoint."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from lookahead.errors import ConfigError

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# What the HF Trainer writes into a checkpoint; trainer_state.json comes last, so its presence marks completion.
_REQUIRED = ("trainer_state.json",)
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json", "pytorch_model_fsdp_0")


def is_complete_checkpoint(path: Path) -> bool:
    return all((path / f).exists() for f in _REQUIRED) and any((path / f).exists() for f in _WEIGHTS)


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
        raise ConfigError(f"resume={resume!r}: not a complete checkpoint folder (needs trainer_state.json and weights)")
    return path


def checkpoint_step(path: Path) -> int:
    return int(json.loads((path / "trainer_state.json").read_text())["global_step"])


def truncate_metrics(metrics_path: Path, step: int) -> None:
    """On resume, drop logged records past the checkpoint's step so metrics.jsonl reads as one clean run."""
    if not metrics_path.is_file():
        return
    kept = [line for line in metrics_path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    metrics_path.write_text("".join(line + "\n" for line in kept))
