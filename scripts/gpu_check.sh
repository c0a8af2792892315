#!/usr/bin/env bash
# GPU smoke check (issue: training core): SmolLM2-135M in bf16, 20 steps with LoRA, then 20 steps with QLoRA.
# Run on a CUDA machine from the repo root, after `make setup` (or with a venv that has a CUDA torch):
#   bash scripts/gpu_check.sh [python]
set -euo pipefail
PY=${1:-.venv/bin/python}
OUT=${OUT:-outputs/gpu_check}
export HF_HUB_OFFLINE=1 WANDB_SILENT=true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
for lora in lora qlora; do
  start=$(date +%s)
  "$PY" train.py model=smollm2 model.dtype=bfloat16 trainer.bf16=true lora=$lora logger=none \
    trainer.max_steps=20 trainer.logging_steps=5 trainer.save_steps=20 trainer.per_device_train_batch_size=8 \
    paths.log_dir="$OUT" run_name=smollm2-$lora resume=auto
  echo "lora=$lora: $(( $(date +%s) - start )) s"
  grep '"loss"' "$OUT/runs/smollm2-$lora/metrics.jsonl" | tail -n 2
done
