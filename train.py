"""Fine-tune a chat model with LookAhead Tuning.

python train.py                                   # SmolLM2-135M, arithmetic data, virtual preview, LoRA, CPU
python train.py model=llama3 method=virtual_prefix
accelerate launch --config_file configs/accelerate/ddp.yaml train.py model=llama3
python train.py -m method=real_prefix method.m=2,4,6,8
"""

import sys

import hydra
from omegaconf import DictConfig

from lookahead.errors import LookaheadError


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lookahead.training import train  # imported here so `--help` and config errors stay fast

    try:
        summary = train(cfg)
    except LookaheadError as e:
        if cfg.get("debug"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return summary["final_loss"]


if __name__ == "__main__":
    main()
