"""Fine-tune a chat model with LookAhead Tuning.

python train.py                                   # SmolLM2-135M, arithmetic data, virtual preview, LoRA, CPU
python train.py model=llama3 method=virtual_prefix
accelerate launch --config_file configs/accelerate/ddp.yaml train.py model=llama3
python train.py -m method=real_prefix method.m=2,4,6,8
"""

import os
import sys

import hydra
from omegaconf import DictConfig

from lookahead.errors import Interrupted, LookaheadError


@hydra.main(version_base="1.3", config_path="pkg://lookahead.configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lookahead.training.recipe import train  # imported here so `--help` and config errors stay fast

    try:
        summary = train(cfg)
        if cfg.eval.after_train:
            evaluate_run(summary["run_dir"], list(cfg.eval.overrides))
    except LookaheadError as e:
        if cfg.get("debug"):
            raise
        stopped = isinstance(e, Interrupted)  # a clean stop on a signal, with its checkpoint saved
        # Every rank stops together on a signal: rank 0 says so once. An error may be one rank's own: each says it.
        if not stopped or os.environ.get("RANK", "0") == "0":
            print(f"{'stopped' if stopped else 'error'}: {e}", file=sys.stderr)
        sys.exit(e.exit_code if stopped else 2)
    return summary["final_loss"]


def evaluate_run(run_dir: str, overrides: list[str]) -> None:
    from accelerate import PartialState

    from lookahead.commands.compose import compose_evaluate_config
    from lookahead.evaluation.runner import evaluate

    cfg = compose_evaluate_config([f"run_dir={run_dir}", *overrides])
    api_key = os.environ.get(cfg.safety.llm.api_key_env) if cfg.safety.judge == "llm" else None
    evaluate(cfg, judge_api_key=api_key)
    PartialState().wait_for_everyone()


if __name__ == "__main__":
    main()
