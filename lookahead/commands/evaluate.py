"""Evaluate a fine-tuned run or a seed model: utility, safety (RSR/JSR) and KL drift.

    python evaluate.py run_dir=outputs/runs/smollm2-arithmetic-virtual_prefix-lora suite=[gsm8k,safety] \
        gsm8k.path=../shared/data/gsm8k/test.jsonl gsm8k.limit=50 safety.path=../shared/data/safety/jbb_behaviors.csv
    python evaluate.py model=llama2 suite=safety safety.path=jbb_behaviors.csv
    python evaluate.py run_dir=<run> gate.max_rsr_drop=5 gate.max_jsr_drop=10    # exit 3 when the gate fails
    python evaluate.py model.path=<any model> seed_model=<its seed> gate.max_rsr_drop=5
"""

import os
import sys

import hydra
from omegaconf import DictConfig

from lookahead.errors import LookaheadError
from lookahead.evaluation.gate import GateFailed


@hydra.main(version_base="1.3", config_path="pkg://lookahead.configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from lookahead.evaluation.runner import evaluate

    # The judge's API key is read here, at the entry point, and passed on; it never enters the config.
    api_key = os.environ.get(cfg.safety.llm.api_key_env) if cfg.safety.judge == "llm" else None
    try:
        evaluate(cfg, judge_api_key=api_key)
    except GateFailed as e:  # the evaluation is done and written; the model lost more than the gate allows
        print(e, file=sys.stderr)
        sys.exit(e.exit_code)
    except LookaheadError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
