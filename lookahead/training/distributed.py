"""Process-group set-up that launchers leave to the program: SLURM tasks started without `accelerate launch`.

Under `srun python train.py` or a hydra-submitit-launcher job with one task per GPU, SLURM starts the processes but
sets none of torch.distributed's variables. `adopt_slurm_tasks` derives them from SLURM's, so those processes form
one run exactly as under `accelerate launch` (one run dir, rank 0 writes). It does nothing when a launcher already
set RANK, or when the job has a single task.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)


def join_process_group(timeout_s: float | None = None) -> Any:
    """accelerate's PartialState (gloo over CPU processes without CUDA), with the group torn down at exit.

    `timeout_s` (`trainer.ddp_timeout`) is how long a rank waits in a collective: rank 0 alone writes SDFT's rewrites
    or the seed's reference log-probs while the others wait at a barrier, far past NCCL's default of 10 minutes.

    Left to the interpreter's finalisation, a gloo or NCCL group's threads can be destroyed while still joinable, and
    the rank then dies with SIGABRT ("terminate called without an active exception") after its work is saved, which
    fails the launcher. `atexit` runs after Python's own threads are joined and before that finalisation.
    """
    import torch
    from accelerate import PartialState

    kwargs = {"timeout": timedelta(seconds=timeout_s)} if timeout_s else {}
    state = PartialState(cpu=not torch.cuda.is_available(), **kwargs)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        atexit.unregister(_release_process_group)  # once per process, however many jobs a multirun starts
        atexit.register(_release_process_group)
    return state


def launcher_mixed_precision(environ: MutableMapping[str, str] | None = None) -> str | None:
    """The mixed precision `accelerate launch` was given (its config's `mixed_precision`), or None."""
    env = os.environ if environ is None else environ
    return env.get("ACCELERATE_MIXED_PRECISION")


def launcher_sharding(environ: MutableMapping[str, str] | None = None) -> str | None:
    """ "FSDP" or "DeepSpeed ZeRO-3" when `accelerate launch` shards the weights (its exported config), else None."""
    env = os.environ if environ is None else environ
    if env.get("ACCELERATE_USE_FSDP", "").lower() in ("true", "1"):
        return "FSDP"
    if (
        env.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("true", "1")
        and env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    ):
        return "DeepSpeed ZeRO-3"
    return None


def _release_process_group() -> None:
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: "gpu[07-09,12],cpu01" -> "gpu07"."""
    head = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if head is None:
        raise ValueError(f"cannot read a host from SLURM node list {nodelist!r}")
    prefix, ranges = head.group(1), head.group(2)
    if not ranges:
        return prefix
    return prefix + re.split(r"[-,]", ranges)[0]


def adopt_slurm_tasks(environ: MutableMapping[str, str] | None = None) -> bool:
    """Export RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT from SLURM's variables."""
    env = os.environ if environ is None else environ
    if "RANK" in env or "SLURM_PROCID" not in env or int(env.get("SLURM_NTASKS", "1")) <= 1:
        return False
    ntasks = int(env["SLURM_NTASKS"])
    per_node = env.get("SLURM_NTASKS_PER_NODE", str(ntasks)).split("(")[0]  # "8(x2)" -> "8"
    env.update(
        RANK=env["SLURM_PROCID"],
        WORLD_SIZE=str(ntasks),
        LOCAL_RANK=env.get("SLURM_LOCALID", "0"),
        LOCAL_WORLD_SIZE=per_node,
        MASTER_ADDR=env.get("MASTER_ADDR") or first_host(env["SLURM_JOB_NODELIST"]),
        # A port per job, so two jobs sharing a node do not collide.
        MASTER_PORT=env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000),
    )
    log.info("SLURM task %s of %s: MASTER_ADDR=%s", env["RANK"], ntasks, env["MASTER_ADDR"])
    return True
