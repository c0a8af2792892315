"""Helpers shared by the command-line scripts: compose the training config outside of a Hydra run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from lookahead.errors import LookaheadError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"  # shipped in the package (configs/ links here)


def _compose(config_name: str, overrides: list[str], config_dir: Path) -> DictConfig:
    # Inside a running Hydra app (train.py with eval.after_train) Hydra is already initialised on configs/.
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=overrides)
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def compose_train_config(overrides: list[str], config_dir: Path = CONFIG_DIR) -> DictConfig:
    """The same config `python train.py <overrides>` would run, without creating a run dir."""
    return _compose("train", [*overrides, "paths.output_dir=null"], config_dir)


def compose_evaluate_config(overrides: list[str], config_dir: Path = CONFIG_DIR) -> DictConfig:
    """The same config `python evaluate.py <overrides>` would run (outside a Hydra app, with no Hydra run dir)."""
    return _compose("evaluate", [*overrides, "paths.output_dir=null"], config_dir)


def run_script(main: Callable[[list[str]], int], argv: list[str] | None = None) -> NoReturn:
    """Run a script's `main`; a LookaheadError becomes one line on stderr and exit code 2."""
    try:
        sys.exit(main(sys.argv[1:] if argv is None else argv))
    except LookaheadError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
