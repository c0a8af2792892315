"""Helpers shared by the command-line scripts: compose the training config outside of a Hydra run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lookahead.errors import LookaheadError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def compose_train_config(overrides: list[str], config_dir: Path = CONFIG_DIR) -> DictConfig:
    """The same config `python train.py <overrides>` would run, without creating a run dir."""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, "paths.output_dir=null"])


def run_script(main: Callable[[list[str]], int], argv: list[str] | None = None) -> NoReturn:
    """Run a script's `main`; a LookaheadError becomes one line on stderr and exit code 2."""
    try:
        sys.exit(main(sys.argv[1:] if argv is None else argv))
    except LookaheadError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
