#!/usr/bin/env bash
# One `accelerate launch` for this machine of a multi-machine run. The topology comes from the environment:
#   NUM_MACHINES, MACHINE_RANK, MAIN_PROCESS_IP (required), MAIN_PROCESS_PORT (29500), GPUS_PER_NODE (8)
#   ACCELERATE_ARGS: extra `accelerate launch` flags, e.g. "--mixed_precision no"
# Usage: scripts/launch_multinode.sh <accelerate config> [train.py overrides...]
# Every machine must see the same repository path and the same outputs/ (a shared filesystem): the run dir has no
# timestamp, so all ranks on all machines agree on it, and only global rank 0 writes logs, metrics and wandb.
set -euo pipefail
config=${1:?usage: $0 <accelerate config> [train.py overrides...]}
shift
: "${NUM_MACHINES:?set NUM_MACHINES}" "${MACHINE_RANK:?set MACHINE_RANK}" "${MAIN_PROCESS_IP:?set MAIN_PROCESS_IP}"
gpus=${GPUS_PER_NODE:-8}
cd "$(dirname "$0")/.."
# On SIGTERM torchrun gives the workers this long to save their checkpoint before SIGKILL (its default: 30 s).
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-300}
exec ${ACCELERATE:-accelerate} launch --config_file "$config" \
  --num_machines "$NUM_MACHINES" --machine_rank "$MACHINE_RANK" \
  --main_process_ip "$MAIN_PROCESS_IP" --main_process_port "${MAIN_PROCESS_PORT:-29500}" \
  --num_processes $((NUM_MACHINES * gpus)) ${ACCELERATE_ARGS:-} \
  train.py "$@"
