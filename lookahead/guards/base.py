"""The guard protocol: what keeps a fine-tune near its safety alignment, beside any preview and objective.

A guard may add a penalty to the training loss (`penalty`, e.g. AsFT) and may change the trained weights once
training ends, before `final/` is saved (`finalize`, e.g. Safe LoRA's projection). A new guard is one module in
`lookahead/guards/` plus one YAML in `configs/guard/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch


class Guard(Protocol):
    name: str

    def prepare(self, model: Any, is_lora: bool, device: Any = None) -> None:
        """Read what the guard needs (alignment directions) for the model about to be trained, onto `device` (the
        process's accelerator, where training will run)."""
        ...

    def penalty(self, model: Any) -> torch.Tensor | None:
        """A term added to the loss once per optimizer step, or None."""
        ...

    def finalize(self, model: Any, run_dir: Path) -> dict[str, Any]:
        """Change the trained weights in place if the guard does so; return what it did (for summary.json)."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class NoGuard:
    name: str = "none"
    tag: str = ""

    def prepare(self, model: Any, is_lora: bool, device: Any = None) -> None:
        return None

    def penalty(self, model: Any) -> torch.Tensor | None:
        return None

    def finalize(self, model: Any, run_dir: Path) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        return "none"
