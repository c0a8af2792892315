"""Evaluate a fine-tuned run or a seed model (the same command as `lookahead eval`).

    python evaluate.py run_dir=outputs/runs/smollm2-arithmetic-virtual_prefix-lora suite=[gsm8k,safety] \
        gsm8k.path=../shared/data/gsm8k/test.jsonl gsm8k.limit=50 safety.path=../shared/data/safety/jbb_behaviors.csv
    python evaluate.py model=llama2 suite=safety safety.path=jbb_behaviors.csv
"""

from lookahead.commands.evaluate import main

if __name__ == "__main__":
    main()
