"""Helpers shared by the command-line scripts: compose the training config outside of a Hydra run."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def compose_train_config(overrides: list[str], config_dir: Path = CONFIG_DIR) -> DictConfig:
    """The same config `python train.py <overrides>` would run, without creating a run dir."""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, "paths.output_dir=null"])
