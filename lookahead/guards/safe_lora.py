"""Safe LoRA (Hsu et al., NeurIPS 2024): after training, project the LoRA update of the layers that strayed from the
alignment subspace back onto it.

For each adapted weight, with V = W_aligned - W_base and its projector P (`guard.projector`, by default Safe LoRA's
own C = V V^T / ||V||_F), the update dW = B A is compared with its projection: s = cos(P B A, B A) (Frobenius). Layers
with s <= `guard.threshold` (or, with `guard.top_fraction`, that fraction of layers with the lowest s) get B <- P B,
so their update becomes P dW. The others keep their update. `safe_lora.json` in the run dir lists every layer's s and
whether it was projected.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lookahead.errors import ConfigError
from lookahead.guards.directions import PROJECTORS, lora_modules, stream_directions

log = logging.getLogger(__name__)

REPORT_FILE = "safe_lora.json"


@dataclass
class SafeLoRA:
    aligned_model: str | None = None
    base_model: str | None = None
    threshold: float | None = 0.35  # Safe LoRA's default similarity threshold
    top_fraction: float | None = None  # instead of threshold: project this fraction of layers, least aligned first
    projector: str = "paper"
    rank: int | None = None  # `exact` only: keep at most this many directions per layer
    name: str = "safe_lora"
    tag: str = "-safelora"
    layers: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.aligned_model or not self.base_model:
            raise ConfigError("guard=safe_lora needs guard.aligned_model and guard.base_model (Hub ids or folders)")
        if self.projector not in PROJECTORS:
            raise ConfigError(f"guard.projector={self.projector!r}: expected one of {list(PROJECTORS)}")
        if self.top_fraction is not None and not 0 < float(self.top_fraction) <= 1:
            raise ConfigError(f"guard.top_fraction={self.top_fraction!r}: must be in (0, 1]")
        if self.top_fraction is None and (self.threshold is None or not -1 <= float(self.threshold) <= 1):
            raise ConfigError(f"guard.threshold={self.threshold!r}: a cosine similarity in [-1, 1]")

    def prepare(self, model: Any, is_lora: bool, device: Any = None) -> None:
        if not is_lora:
            raise ConfigError("guard=safe_lora projects a LoRA update: use lora=lora or lora=qlora (or guard=asft)")

    def penalty(self, model: Any) -> torch.Tensor | None:
        return None

    @torch.no_grad()
    def finalize(self, model: Any, run_dir: Path | None) -> dict[str, Any]:
        modules = lora_modules(model)
        if not modules:
            raise ConfigError("guard=safe_lora: the model has no LoRA layers to project")
        rows, similarities, projected_b = [], [], {}
        for direction in stream_directions(
            self.aligned_model, self.base_model, list(modules), self.projector, self.rank
        ):
            module = modules[direction.name]
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            update = b.float() @ a.float()
            new_b = direction.project(b.float())
            similarity = torch.nn.functional.cosine_similarity((new_b @ a.float()).flatten(), update.flatten(), dim=0)
            s = float(similarity) if update.abs().sum() > 0 else 1.0  # no update: nothing strayed
            similarities.append(s)
            rows.append({"layer": direction.name, "similarity": round(s, 6), "alignment_norm": direction.norm})
            projected_b[direction.name] = new_b.to(b.dtype)
        chosen = self.choose(similarities)
        for row, project in zip(rows, chosen):
            row["projected"] = project
            if project:
                modules[row["layer"]].lora_B["default"].weight.copy_(projected_b[row["layer"]])
        report = {
            "guard": self.name,
            "projector": self.projector,
            "threshold": None if self.top_fraction is not None else self.threshold,
            "top_fraction": self.top_fraction,
            "projected": sum(chosen),
            "layers": len(rows),
            "per_layer": rows,
        }
        if run_dir is None:  # another rank: the main process writes the report
            return {k: v for k, v in report.items() if k != "per_layer"}
        (Path(run_dir) / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        log.info(
            "Safe LoRA: projected %d of %d layers (%s); per layer in %s",
            report["projected"],
            report["layers"],
            f"top {self.top_fraction:.0%}" if self.top_fraction is not None else f"similarity <= {self.threshold}",
            Path(run_dir) / REPORT_FILE,
        )
        return {k: v for k, v in report.items() if k != "per_layer"}

    def choose(self, similarities: list[float]) -> list[bool]:
        """Which layers to project: similarity <= threshold, or the lowest `top_fraction` of them."""
        if self.top_fraction is None:
            return [s <= float(self.threshold) for s in similarities]
        k = math.ceil(float(self.top_fraction) * len(similarities))
        lowest = set(sorted(range(len(similarities)), key=lambda i: similarities[i])[:k])
        return [i in lowest for i in range(len(similarities))]

    def describe(self) -> str:
        if self.top_fraction is not None:
            rule = f"the {self.top_fraction:.0%} least aligned layers"
        else:
            rule = f"layers with similarity <= {self.threshold}"
        return (
            f"Safe LoRA (Hsu et al., 2024): after training, the LoRA updates of {rule} are projected onto the "
            "alignment subspace"
        )
