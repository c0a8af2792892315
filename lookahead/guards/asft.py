"""AsFT (Yang et al., 2025): a training-time penalty on the part of each update that leaves the alignment subspace.

With V = W_aligned - W_base per adapted weight, the loss gains

    lam * sum over layers ||(I - C) dW||_F^2

where dW is the LoRA update scale * B A, or, for a full fine-tune, W - W_seed (the seed's weights are kept for the
adapted layers). This is the regulariser of AsFT's paper and code (PKU-YuanGroup/AsFT, utils/AsFT_train_utils.py:
`(identity - c_hat) @ delta_w`, `lambda_reg * ||.||_F^2`), with C as that code builds it from Safe LoRA: C = V V^T /
||V||_F (`guard.projector=paper`, the default). It is not a projector, so no update is entirely free.

`guard.projector=exact` (a deviation) uses P = U U^T, the orthogonal projector onto V's leading singular directions
holding `guard.energy` of ||V||_F^2 (0.9 by default), so an update inside them costs exactly 0 and one orthogonal to
them its squared norm. `energy: 1.0` keeps V's whole numerical rank: right for a low-rank V (a LoRA merge, the CPU
testbed's seed), but on an RLHF'd model's full-rank V it makes P = I and the penalty 0, which is warned about.
Every layer's kept rank is logged and returned in the run's guard report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from lookahead.errors import ConfigError
from lookahead.guards.directions import PROJECTORS, Direction, lora_modules, shared_directions, weight_name

log = logging.getLogger(__name__)

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class AsFT:
    aligned_model: str | None = None
    base_model: str | None = None
    lam: float = 1.0
    projector: str = "paper"
    rank: int | None = None  # `exact`: keep at most this many alignment directions per layer (memory on large models)
    energy: float = 0.9  # `exact`: keep the leading directions that hold this share of ||V||_F^2 (1.0: all of them)
    target_modules: list[str] | None = None  # full fine-tunes: which weights (null: the attention and MLP projections)
    name: str = "asft"
    tag: str = "-asft"
    directions: dict[str, Direction] = field(default_factory=dict, repr=False)
    targets: dict[str, tuple[Any, torch.Tensor | None]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.aligned_model or not self.base_model:
            raise ConfigError("guard=asft needs guard.aligned_model and guard.base_model (Hub ids or folders)")
        if not float(self.lam) >= 0:
            raise ConfigError(f"guard.lam={self.lam!r}: must be >= 0")
        if self.projector not in PROJECTORS:
            raise ConfigError(f"guard.projector={self.projector!r}: expected one of {list(PROJECTORS)}")
        if not 0 < float(self.energy) <= 1:
            raise ConfigError(f"guard.energy={self.energy!r}: must be in (0, 1]")

    def prepare(self, model: Any, is_lora: bool, device: Any = None) -> None:
        if is_lora:
            self.targets = {name: (module, None) for name, module in lora_modules(model).items()}
        else:
            wanted = self.target_modules or [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            for name, module in model.named_modules():
                if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in wanted:
                    self.targets[weight_name(name)] = (module, module.weight.detach().clone())  # the seed's weight
        if not self.targets:
            raise ConfigError("guard=asft: no adapted layer found to regularise")
        names = list(self.targets)
        self.directions, here = shared_directions(
            self.aligned_model, self.base_model, names, self.projector, self.rank, float(self.energy), device
        )
        log.info(
            "AsFT: %d layers regularised (%d of their directions computed by this process), lam=%s, projector=%s",
            len(self.directions),
            here,
            self.lam,
            self.projector,
        )
        if self.projector == "exact":
            kept = self.kept_ranks()
            log.info("AsFT: directions kept per layer (energy %s): %s", self.energy, kept)
            identity = [n for n, d in self.directions.items() if d.is_identity]
            if identity and len(identity) == len(self.directions):
                log.warning(
                    "AsFT: every layer's projector is the identity, so the penalty is 0 for any update and the run "
                    "trains as without a guard; lower guard.energy"
                )

    def kept_ranks(self) -> dict[str, list[int]]:
        """`exact`: per layer, [directions kept, directions there are]."""
        return {n: [d.kept, d.full] for n, d in self.directions.items() if d.kept is not None}

    def penalty(self, model: Any) -> torch.Tensor | None:
        if not self.lam:
            return None
        total = None
        for name, (module, seed) in self.targets.items():
            direction = self.directions[name]
            if seed is None:  # LoRA: dW = scale * B A; ||(I - P) B A||^2 from r x r products
                a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
                scale = module.scaling["default"]
                off = b - direction.project(b)
                term = (scale**2) * ((off.T @ off) * (a @ a.T)).sum()
            else:
                update = module.weight - seed.to(module.weight.device)
                off = update - direction.project(update)
                term = (off * off).sum()
            total = term if total is None else total + term
        return float(self.lam) * total

    def finalize(self, model: Any, run_dir: Any) -> dict[str, Any]:
        report = {"guard": self.name, "lam": float(self.lam), "projector": self.projector}
        report["layers"] = len(self.directions)
        if self.projector == "exact":
            report.update(energy=float(self.energy), kept=self.kept_ranks())
        return report

    def describe(self) -> str:
        return (
            f"AsFT (Yang et al., 2025): lam={self.lam} x the squared norm of each update's part outside the alignment "
            "subspace, added to the loss"
        )
