"""One rank of an FSDP2 (torch `fully_shard`) full fine-tune of the tiny model on gloo, driving lookahead's own pieces
the way the Trainer does under `accelerate launch --config_file configs/accelerate/fsdp.yaml`: the data pass and
collator, the answer-token loss (which must fall back from the chunked head, since the head's weight is sharded outside
the forward), the guard refusal, sharded checkpoints (torch.distributed.checkpoint, what accelerate writes for
SHARDED_STATE_DICT), and `save_weights`, whose FSDP branch gathers through accelerate's own `get_state_dict`.

accelerate turns an FSDP config into DDP when there is no CUDA, so this is the lowest layer at which that code runs
on CPU. Run with `torchrun --nproc_per_node 2` (or as a single process for the reference run):

    python tests/integration/fsdp2_worker.py <out dir> <first step> <last step> [--single]

Steps run from <first step> to <last step>; a first step above 1 resumes from <out dir>/checkpoint. Each step takes the
next 8 examples: 4 per rank, or all 8 in the single process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lookahead.errors import ConfigError  # noqa: E402
from lookahead.models.loading import load_model  # noqa: E402
from lookahead.objectives.chunked_head import chunk_tokens_for  # noqa: E402
from lookahead.objectives.loss import AnswerTokenLoss  # noqa: E402
from lookahead.training.recipe import build_data, save_weights  # noqa: E402
from lookahead.training.trainer import check_guard_placement, weight_sharding  # noqa: E402
from tests.conftest import compose, tiny_overrides  # noqa: E402

GLOBAL_BATCH = 8


def main(out: Path, first: int, last: int, single: bool) -> None:
    from accelerate import Accelerator
    from accelerate.utils import DistributedType
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not single:
        dist.init_process_group("gloo")
    rank, world = (0, 1) if single else (dist.get_rank(), dist.get_world_size())
    cfg = compose([*tiny_overrides(), "lora=none", "method=virtual_prefix"])
    data = build_data(cfg, "")
    model = load_model(cfg.model, "", data.tokenizer, cfg.lora, seed=0, local_rank=0)
    model.config.use_cache = False
    trainer = SimpleNamespace(is_fsdp_enabled=not single, is_deepspeed_enabled=False, deepspeed=None,
                              save_model=lambda folder: model.save_pretrained(folder))  # fmt: skip
    sharding = weight_sharding(trainer)
    chunk = chunk_tokens_for(
        model, 256, f"its weights are sharded outside the forward pass ({sharding})" if sharding else None
    )
    report = {"chunk_tokens": chunk, "guard_refused": False}
    try:
        check_guard_placement(SimpleNamespace(name="asft"), sharding)
    except ConfigError:
        report["guard_refused"] = True
    if not single:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        report["dtensor_params"] = all(type(p).__name__ == "DTensor" for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if first > 1:
        import torch.distributed.checkpoint as dcp

        state = {"model": {}, "optim": {}}
        state["model"], state["optim"] = get_state_dict(model, optimizer)
        dcp.load(state, checkpoint_id=str(out / "checkpoint"))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    loss_fn = AnswerTokenLoss(cfg.trainer.first_k, chunk_tokens=chunk)
    losses = []
    for step in range(first, last + 1):
        examples = data.train[(step - 1) * GLOBAL_BATCH : step * GLOBAL_BATCH]
        share = GLOBAL_BATCH // world
        batch = data.collator(examples[rank * share : (rank + 1) * share])
        labels = batch.pop("labels")
        count = torch.tensor(float((labels[:, 1:] != -100).sum()))
        if not single:
            dist.all_reduce(count)  # num_items_in_batch: label tokens of every rank, as the Trainer counts them
        loss = loss_fn(model(**batch), labels, num_items_in_batch=count) * world  # FSDP averages over ranks
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total = loss.detach() / world
        if not single:
            dist.all_reduce(total)
        losses.append(float(total))
    if last < 4:  # a sharded checkpoint, as accelerate's SHARDED_STATE_DICT writes one per rank
        import torch.distributed.checkpoint as dcp

        model_state, optim_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(out / "checkpoint"))
    else:
        gather = SimpleNamespace(distributed_type=DistributedType.FSDP, is_fsdp2=True)
        trainer.model = model
        trainer.accelerator = SimpleNamespace(
            get_state_dict=lambda m: Accelerator.get_state_dict(gather, m), unwrap_model=lambda m: m
        )
        trainer.is_world_process_zero = lambda: rank == 0
        save_weights(trainer, out / "final", finished_from=None)
    if rank == 0:
        (out / f"report-{first}-{last}.json").write_text(json.dumps({**report, "losses": losses}))
    if not single:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), "--single" in sys.argv)
