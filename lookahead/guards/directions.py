"""The alignment direction of each layer, V = W_aligned - W_base, streamed from two model folders one tensor at a time.

Both guards need, for every weight the fine-tune changes, the subspace that safety alignment moved that weight in.
The two models are never loaded: their safetensors are opened lazily (`safe_open`) and each layer's pair of tensors is
read, differenced and reduced to what the guard keeps, so memory holds one layer pair at a time.

Projectors (`guard.projector`):
- `paper`: C = V V^T / ||V||_F, as Safe LoRA's code computes it (not idempotent: it scales directions by their singular
  values over ||V||_F);
- `exact`: P = U U^T, the orthogonal projector onto V's column space (U: V's left singular vectors with singular value
  above `rtol` x the largest, at most `rank` of them), so an update along V is left exactly as it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lookahead.errors import ConfigError

log = logging.getLogger(__name__)

PROJECTORS = ("paper", "exact")


def model_folder(name_or_path: str, key: str) -> Path:
    """A local model folder, or the Hub snapshot of an id (weights and index only); offline, from the HF cache."""
    path = Path(str(name_or_path))
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name_or_path), allow_patterns=["*.safetensors", "*.json"]))
    except Exception as e:  # noqa: BLE001 - any Hub failure is the same message to the user
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ConfigError(
            f"{key}={name_or_path!r}: not a local model folder, and the Hub gave no copy ({first})"
        ) from None


class WeightReader:
    """Reads single tensors by name from a model folder's safetensors (sharded or not), without loading the model."""

    def __init__(self, folder: Path, key: str):
        from safetensors import safe_open

        self.folder, self.key = folder, key
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
        else:
            files = sorted(folder.glob("*.safetensors"))
            if not files:
                raise ConfigError(f"{key}={str(folder)!r}: holds no .safetensors weights")
            weight_map = {}
            for file in files:
                with safe_open(str(file), "pt") as f:
                    weight_map.update({name: file.name for name in f.keys()})
        self.weight_map = weight_map
        self._open = safe_open

    def names(self) -> list[str]:
        return list(self.weight_map)

    def get(self, name: str) -> torch.Tensor:
        if name not in self.weight_map:
            raise ConfigError(f"{self.key}={str(self.folder)!r}: has no weight {name!r}; is it the same architecture?")
        with self._open(str(self.folder / self.weight_map[name]), "pt") as f:
            return f.get_tensor(name).float()


@dataclass
class Direction:
    """What a guard keeps of one layer's alignment direction."""

    name: str  # the weight's name in the model folders, e.g. model.layers.0.self_attn.q_proj.weight
    basis: torch.Tensor | None  # `exact`: U (out x k), orthonormal columns
    matrix: torch.Tensor | None  # `paper`: C (out x out)
    norm: float  # ||V||_F

    def project(self, update: torch.Tensor) -> torch.Tensor:
        """The projection of an update (out x anything) onto this layer's alignment subspace."""
        if self.basis is not None:
            basis = self.basis.to(update.device, update.dtype)
            return basis @ (basis.T @ update)
        return self.matrix.to(update.device, update.dtype) @ update


def direction_of(name: str, v: torch.Tensor, projector: str, rank: int | None, rtol: float) -> Direction:
    norm = float(torch.linalg.matrix_norm(v))
    if projector == "paper":
        return Direction(name, None, (v @ v.T) / max(norm, 1e-12), norm)
    u, s, _ = torch.linalg.svd(v, full_matrices=False)
    keep = int((s > rtol * s.max()).sum()) if norm > 0 else 0
    if rank:
        keep = min(keep, int(rank))
    return Direction(name, u[:, :keep].contiguous(), None, norm)


def stream_directions(
    aligned: str,
    base: str,
    weight_names: list[str],
    projector: str = "exact",
    rank: int | None = None,
    rtol: float = 1e-6,
) -> Iterator[Direction]:
    """One `Direction` per weight name, reading one (aligned, base) tensor pair at a time."""
    if projector not in PROJECTORS:
        raise ConfigError(f"guard.projector={projector!r}: expected one of {list(PROJECTORS)}")
    aligned_reader = WeightReader(model_folder(aligned, "guard.aligned_model"), "guard.aligned_model")
    base_reader = WeightReader(model_folder(base, "guard.base_model"), "guard.base_model")
    for name in weight_names:
        a, b = aligned_reader.get(name), base_reader.get(name)
        if a.shape != b.shape:
            raise ConfigError(
                f"guard: {name} is {tuple(a.shape)} in guard.aligned_model and {tuple(b.shape)} in guard.base_model; "
                "they must be the same architecture"
            )
        yield direction_of(name, a - b, projector, rank, rtol)
        del a, b


def lora_modules(model: Any) -> dict[str, Any]:
    """The LoRA layers of a PEFT model, by the name of the base weight they adapt in the model's own folder."""
    found = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer") and "default" in getattr(module, "lora_A", {}):
            found[weight_name(name)] = module
    return found


def weight_name(module_name: str) -> str:
    """`base_model.model.model.layers.0.self_attn.q_proj` -> `model.layers.0.self_attn.q_proj.weight`."""
    return module_name.removeprefix("base_model.model.") + ".weight"
