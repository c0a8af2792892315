"""Length-grouped sampling: batches of similar length waste less compute on padding.

Each epoch is a seeded permutation of all examples (so every example is seen exactly once per epoch), cut into
mega-batches whose members are sorted by length. The order depends only on (seed, epoch), so a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthGroupedSampler(Sampler[int]):
    def __init__(self, lengths: Sequence[int], group_size: int, seed: int, mega_batch_factor: int = 50):
        self.lengths = list(lengths)
        self.mega = max(1, group_size * mega_batch_factor)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        for start in range(0, len(order), self.mega):
            chunk = order[start : start + self.mega]
            yield from sorted(chunk, key=lambda i: -self.lengths[i])
