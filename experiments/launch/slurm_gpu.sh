#!/bin/bash
# MQAR with LASP-2 on a SLURM GPU cluster: 2 nodes x 8 GPUs, one process per GPU.
# The sequence is sharded over the 8 GPUs of a node (mesh.seq=8), batches over the nodes
# (mesh.data=-1 -> 2); jax.distributed.initialize() reads the SLURM environment.
#
#   sbatch experiments/launch/slurm_gpu.sh            # from the repository root
#
#SBATCH --job-name=linmix-mqar-lasp2
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=01:00:00
#SBATCH --output=runs/slurm-%j.out
set -euo pipefail

WORKDIR=${WORKDIR:-runs/mqar_lasp2_$SLURM_JOB_ID}  # shared filesystem: checkpoints + metrics
# Preemption: SLURM sends SIGTERM before the kill; rerunning the same command resumes.
srun --kill-on-bad-exit=1 python -m linmix.main \
  --config=ml_collections_configs/mqar.py:mixer=gla \
  --config.distributed.enabled=True \
  --config.mesh.data=-1 --config.mesh.seq=8 \
  --config.data.seq_len=8192 --config.data.num_kv_pairs=64 \
  --config.train.batch_size=16 \
  --config.model.chunk_size=64 \
  --workdir="$WORKDIR"
