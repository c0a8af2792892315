# LookAhead previews in a TRL pipeline: preview the data, then train it with SFTTrainer's completion-only loss.
import os

import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoTokenizer
from trl import SFTConfig, SFTTrainer

from lookahead import preview_dataset

model = os.environ.get("MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
tokenizer = AutoTokenizer.from_pretrained(model)
data = load_dataset("json", data_files=os.environ.get("DATA", "train.jsonl"), split="train")  # prompt/completion
train = preview_dataset(data, "virtual_prefix", tokenizer)  # or "real_prefix", m=6; the CLI's previews
args = SFTConfig(output_dir=os.environ.get("OUT", "outputs/trl-virtual_prefix"), completion_only_loss=True,
                 max_steps=int(os.environ.get("MAX_STEPS", -1)), use_cpu=not torch.cuda.is_available(),
                 report_to=[])  # fmt: skip
lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer, peft_config=lora).train()
