"""The alignment direction of each layer, V = W_aligned - W_base, streamed from two model folders one tensor at a time.

Both guards need, for every weight the fine-tune changes, the subspace that safety alignment moved that weight in.
The two models are never loaded: their safetensors are opened lazily (`safe_open`) and each layer's pair of tensors is
read, differenced and reduced to what the guard keeps, so memory holds one layer pair at a time.

Projectors (`guard.projector`):
- `paper`: C = V V^T / ||V||_F, as Safe LoRA's code computes it and AsFT's code reuses (not idempotent: it scales
  directions by their singular values over ||V||_F);
- `exact`: P = U U^T, the orthogonal projector onto V's leading left singular vectors: the fewest that hold `energy`
  of V's squared Frobenius norm (and never one below `rtol` x the largest singular value), at most `rank` of them.
  An update inside that subspace is left exactly as it is. `energy=1.0` keeps V's whole numerical rank, which for a
  full fine-tune's V (an RLHF'd model against its base, stored in 16 bits) is every direction: P = I, and a guard
  built on it does nothing, so `direction_of` warns.
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
    kept: int | None = None  # `exact`: k, the directions kept
    full: int | None = None  # `exact`: min(out, in), the most there can be

    @property
    def is_identity(self) -> bool:
        """Whether an `exact` projector keeps every direction there is (P = I: nothing is outside it)."""
        return self.kept is not None and self.full is not None and self.kept >= self.full

    def to(self, device: Any) -> Direction:
        """This direction with its tensors on `device` (None: where they are)."""
        if device is None:
            return self
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Direction(self.name, move(self.basis), move(self.matrix), self.norm, self.kept, self.full)

    def project(self, update: torch.Tensor) -> torch.Tensor:
        """The projection of an update (out x anything) onto this layer's alignment subspace."""
        if self.basis is not None:
            basis = self.basis.to(update.device, update.dtype)
            return basis @ (basis.T @ update)
        return self.matrix.to(update.device, update.dtype) @ update


def kept_directions(s: torch.Tensor, energy: float, rtol: float) -> int:
    """The fewest leading singular values whose squares hold `energy` of the total, none below rtol x the largest."""
    if s.numel() == 0 or float(s.max()) <= 0:
        return 0
    above = int((s > rtol * s.max()).sum())
    if energy >= 1.0:
        return above
    share = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum()
    return min(above, int((share < energy - 1e-12).sum()) + 1)


def direction_of(
    name: str, v: torch.Tensor, projector: str, rank: int | None, rtol: float, energy: float = 1.0
) -> Direction:
    norm = float(torch.linalg.matrix_norm(v))
    if projector == "paper":
        return Direction(name, None, (v @ v.T) / max(norm, 1e-12), norm)
    u, s, _ = torch.linalg.svd(v, full_matrices=False)
    keep = kept_directions(s, energy, rtol) if norm > 0 else 0
    if rank:
        keep = min(keep, int(rank))
    direction = Direction(name, u[:, :keep].contiguous(), None, norm, keep, min(v.shape))
    if direction.is_identity and min(v.shape) > 1:
        log.warning(
            "%s: the alignment direction has full rank (%d) and every direction is kept, so the projector is the "
            "identity and nothing is outside it; lower guard.energy or set guard.rank",
            name,
            keep,
        )
    return direction


def stream_directions(
    aligned: str,
    base: str,
    weight_names: list[str],
    projector: str = "exact",
    rank: int | None = None,
    rtol: float = 1e-6,
    energy: float = 1.0,
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
        yield direction_of(name, a - b, projector, rank, rtol, energy)
        del a, b


def shared_directions(
    aligned: str,
    base: str,
    weight_names: list[str],
    projector: str = "exact",
    rank: int | None = None,
    energy: float = 1.0,
    device: Any = None,
) -> tuple[dict[str, Direction], int]:
    """Every layer's direction, on every process of the run, each process computing a share of them.

    Under `accelerate launch` each of N processes reads and decomposes every N-th layer and the shares are exchanged,
    instead of every process running every SVD at once. The directions then go to `device` (the process's GPU), so
    they are not copied there again at every micro-batch. Returns (directions by name, how many this process computed).
    """
    from accelerate import PartialState

    state = PartialState()
    mine = weight_names[state.process_index :: state.num_processes]
    computed = {d.name: d for d in stream_directions(aligned, base, mine, projector, rank, energy=energy)}
    everything = dict(computed)
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        for share in gather_object([computed]):
            everything.update(share)
    if not fits_on(device, everything.values()):
        log.warning(
            "guard: the alignment directions take more than half of %s's free memory; they stay in CPU memory and are "
            "copied per layer at each step (guard.projector=exact with guard.energy < 1 keeps far fewer)",
            device,
        )
        device = None
    return {name: everything[name].to(device) for name in weight_names}, len(computed)


def fits_on(device: Any, directions: Any) -> bool:
    """Whether the directions take at most half of a CUDA device's free memory (any other device: yes). At 7B the
    paper's C matrices are about 42 GB in fp32."""
    if device is None or torch.device(device).type != "cuda":
        return True
    size = sum(t.numel() * t.element_size() for d in directions for t in (d.basis, d.matrix) if t is not None)
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return size <= free / 2


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
