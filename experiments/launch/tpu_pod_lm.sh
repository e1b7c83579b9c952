#!/bin/bash
# A 1.3B-parameter language model (Gated DeltaNet; lm.py:size=1.3b, 100B tokens of 256 x 2048)
# on a TPU pod slice (e.g. v5p-64). The same command runs on every host; parameters and optimizer
# state are FSDP over 8 chips, batches over the rest. DATA and WORKDIR must be visible to every
# host (gcsfuse or NFS); prepare DATA once with `python -m linmix.prepare ... --out=$DATA`.
#
#   TPU=my-v5p-64 ZONE=us-east5-a DATA=/mnt/shared/data/corpus VOCAB=32000 \
#     WORKDIR=/mnt/shared/runs/lm_1.3b experiments/launch/tpu_pod_lm.sh
set -euo pipefail
: "${TPU:?name of the TPU VM}" "${ZONE:?its zone}" "${WORKDIR:?a directory on every host}"
: "${DATA:?a prepared corpus directory on every host}" "${VOCAB:?its vocabulary size}"
MIXER=${MIXER:-gated_deltanet}

gcloud compute tpus tpu-vm scp --recurse --zone="$ZONE" --worker=all . "$TPU":linmix
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  set -e
  cd linmix
  python3 -m pip install -q -e '.[tpu]'
  python3 -m linmix.main \
    --config=ml_collections_configs/lm.py:mixer=$MIXER,size=1.3b,data=$DATA \
    --config.model.vocab_size=$VOCAB \
    --config.distributed.enabled=True \
    --config.mesh.data=-1 --config.mesh.fsdp=8 \
    --workdir=$WORKDIR
"
