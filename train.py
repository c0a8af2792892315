"""Fine-tune a chat model with LookAhead Tuning (the same command as `lookahead train`).

python train.py                                   # SmolLM2-135M, arithmetic data, virtual preview, LoRA, CPU
python train.py model=llama3 method=virtual_prefix
accelerate launch --config_file configs/accelerate/ddp.yaml train.py model=llama3
python train.py -m method=real_prefix method.m=2,4,6,8
"""

from lookahead.commands.train import main

if __name__ == "__main__":
    main()
