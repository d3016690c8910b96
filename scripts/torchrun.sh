#!/bin/bash
# SupCon with torchrun, on each of NNODES machines (run the same line on every node with its NODE_RANK):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 GPUS=8 bash scripts/torchrun.sh configs/cifar10_supcon.yaml
# torchrun starts one process per GPU and sets RANK / LOCAL_RANK / WORLD_SIZE, which Lightning picks up.
set -euo pipefail
CONFIG=${1:-configs/cifar10_supcon.yaml}
shift || true
torchrun \
  --nnodes="${NNODES:-1}" \
  --node_rank="${NODE_RANK:-0}" \
  --nproc_per_node="${GPUS:-1}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --master_port="${MASTER_PORT:-29500}" \
  -m lightning_supcon fit --config "$CONFIG" \
  --trainer.num_nodes="${NNODES:-1}" --trainer.devices="${GPUS:-1}" --trainer.strategy=ddp "$@"
