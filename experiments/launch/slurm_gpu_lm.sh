#!/bin/bash
# A 340M-parameter language model (GLA; lm.py:size=340m, the GLA paper's recipe: 0.5M-token
# batches of 256 x 2048, 15B tokens) on a SLURM GPU cluster: 2 nodes x 8 GPUs, one process per
# GPU, parameters and optimizer state FSDP over the 8 GPUs of a node, batches over the nodes.
# DATA is a corpus prepared once on the shared filesystem, e.g.
#   python -m linmix.prepare --input=/data/corpus --format=jsonl --tokenizer=bpe:32000 --out=$DATA
#
#   DATA=/shared/data/corpus VOCAB=32000 sbatch experiments/launch/slurm_gpu_lm.sh
#
#SBATCH --job-name=linmix-lm-340m
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --output=runs/slurm-%j.out
set -euo pipefail
: "${DATA:?a prepared corpus directory}" "${VOCAB:?its vocabulary size (meta.json)}"
MIXER=${MIXER:-gla}
WORKDIR=${WORKDIR:-runs/lm_340m_${MIXER}}  # shared filesystem; the same command resumes
srun --kill-on-bad-exit=1 python -m linmix.main \
  --config=ml_collections_configs/lm.py:mixer=$MIXER,size=340m,data=$DATA \
  --config.model.vocab_size="$VOCAB" \
  --config.distributed.enabled=True \
  --config.mesh.data=-1 --config.mesh.fsdp=8 \
  --workdir="$WORKDIR"
