"""The preview, objective and guard of a run, built from their config groups (`method=`, `objective=`, `guard=`) by
`_target_`.

Everything that needs to know what a run did (the training recipe, the model card, the sweep report, the data
scripts) builds the objects here and asks them (`describe()`, `label()`), so a new preview or objective is one
module plus one YAML, and no list of names exists anywhere else.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lookahead.errors import ConfigError, LookaheadError


def _build(node: DictConfig, group: str) -> Any:
    if node.get("moved_to"):
        raise ConfigError(
            f"{group}={node.name} is now {node.moved_to}: `method=` picks the preview (vanilla, real_prefix, "
            f"virtual_prefix) and `objective=` the loss, e.g. `method=vanilla {node.moved_to}`"
        )
    if "_target_" not in node:
        raise ConfigError(f"{group}={node.get('name')!r}: its YAML names no class (`_target_`)")
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, LookaheadError):
            raise cause from None
        first = str(cause or e).splitlines()[0][:200]
        raise ConfigError(f"{group}={node.get('name')!r}: cannot build {node._target_} ({first})") from None


def build_preview(method: DictConfig) -> Any:
    """The preview strategy of `cfg.method` (a `lookahead.preview.PreviewStrategy`)."""
    return _build(method, "method")


def build_objective(objective: DictConfig | None) -> Any:
    """The objective of `cfg.objective` (a `lookahead.objectives.Objective`); plain SFT for configs without one."""
    if objective is None:
        from lookahead.objectives.sft import SFT

        return SFT()
    return _build(objective, "objective")


def build_guard(guard: DictConfig | None) -> Any:
    """The guard of `cfg.guard` (a `lookahead.guards.Guard`); none for configs without one."""
    if guard is None:
        from lookahead.guards.base import NoGuard

        return NoGuard()
    return _build(guard, "guard")


def describe_run(cfg: DictConfig) -> dict[str, str]:
    """The preview and objective of a run's saved config, in words and as short labels (for cards and reports)."""
    preview = build_preview(cfg.method)
    objective = build_objective(OmegaConf.select(cfg, "objective"))
    guard = build_guard(OmegaConf.select(cfg, "guard"))
    return {
        "guard": guard.name,
        "guard_words": guard.describe(),
        "preview": preview.name,
        "preview_label": preview.label(),
        "preview_words": preview.describe(),
        "objective": objective.name,
        "objective_words": objective.describe(),
    }
