"""Length-grouped order: batches of similar length waste less compute on padding.

Each epoch's order is `transformers.trainer_pt_utils.get_length_grouped_indices` over a generator seeded with
(seed, epoch): a permutation of all examples (each seen once per epoch), cut into mega-batches sorted by length. The
order depends only on (seed, epoch), so a resumed run sees the same batches as an uninterrupted one.

The Trainer reads the dataset in order (`train_sampling_strategy="sequential"`) and tells the dataset its epoch
through `set_epoch`, as it does for any dataset that has one: no Trainer method is overridden.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers.trainer_pt_utils import get_length_grouped_indices


class LengthGroupedOrder(Dataset):
    def __init__(self, examples: Sequence[dict[str, Any]], group_size: int, seed: int):
        self.examples = examples
        self.lengths = [int(ex["length"]) for ex in examples]
        self.group_size = max(1, int(group_size))
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.order = get_length_grouped_indices(self.lengths, self.group_size, generator=generator)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[self.order[index]]
