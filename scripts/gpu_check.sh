#!/usr/bin/env bash
# GPU smoke check: SmolLM2-135M in bf16, 20 steps each with LoRA, QLoRA, and the two baselines (constrained_sft,
# sdft on a 64-example slice), printing each run's wall time.
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
for method in constrained_sft sdft; do
  start=$(date +%s)
  extra=""; [ "$method" = sdft ] && extra="method.max_new_tokens=128"
  "$PY" train.py model=smollm2 model.dtype=bfloat16 trainer.bf16=true method=$method logger=none \
    dataset.size=64 $extra trainer.max_steps=20 trainer.logging_steps=5 trainer.save_steps=20 \
    trainer.per_device_train_batch_size=8 paths.log_dir="$OUT" run_name=smollm2-$method resume=auto 2>&1 | tail -n 4
  echo "method=$method: $(( $(date +%s) - start )) s"
done
