"""Experiment loggers. Only the main process ever starts one, so N processes make one wandb run."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def start_experiment_logger(cfg: DictConfig, run_dir: Path, *, is_main_process: bool) -> Any:
    """Start wandb on the main process (the Trainer's WandbCallback then logs into this run). Returns the run."""
    if not is_main_process or cfg.logger.name != "wandb" or cfg.logger.mode == "disabled":
        return None
    import wandb

    # A stable id derived from the run dir: a resumed run continues the same wandb run.
    run_id = cfg.logger.get("run_id") or hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]
    run = wandb.init(
        project=cfg.logger.project,
        entity=cfg.logger.get("entity"),
        name=cfg.run_name,
        id=run_id,
        resume="allow",
        dir=str(run_dir),
        mode=cfg.logger.mode,
        tags=list(cfg.logger.get("tags") or []),
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    log.info("wandb run %s (%s) in %s", run.id, cfg.logger.mode, run_dir / "wandb")
    return run


def finish_experiment_logger(run: Any, summary: dict[str, Any], exit_code: int = 0) -> None:
    """Close the run (marked failed with a non-zero exit code), so a crash never leaves it open."""
    if run is None:
        return
    run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
    run.finish(exit_code=exit_code)
