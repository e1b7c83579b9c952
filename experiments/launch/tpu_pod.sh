#!/bin/bash
# MQAR with LASP-2 on a TPU pod slice (e.g. v5e-32: 8 hosts x 4 chips). The same command runs on
# every host; jax.distributed.initialize() reads the TPU metadata. The sequence is sharded over
# the 4 chips of a host (mesh.seq=4), batches over hosts, parameters FSDP over 2 of them.
# WORKDIR must be a directory every host sees (a gcsfuse or NFS mount): all hosts write their
# shards of each checkpoint there; host 0 writes the metrics.
#
#   TPU=my-v5e-32 ZONE=us-west4-a WORKDIR=/mnt/shared/runs/mqar_tpu \
#     experiments/launch/tpu_pod.sh                  # from the repository root
set -euo pipefail
: "${TPU:?name of the TPU VM}" "${ZONE:?its zone}" "${WORKDIR:?a directory on every host}"

# Copy this checkout to every host, install it with the TPU extra, then start all hosts at once.
gcloud compute tpus tpu-vm scp --recurse --zone="$ZONE" --worker=all . "$TPU":linmix
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  set -e
  cd linmix
  python3 -m pip install -q -e '.[tpu]'
  python3 -m linmix.main \
    --config=ml_collections_configs/mqar.py:mixer=gated_deltanet \
    --config.distributed.enabled=True \
    --config.mesh.data=-1 --config.mesh.fsdp=2 --config.mesh.seq=4 \
    --config.data.seq_len=16384 --config.data.num_kv_pairs=128 \
    --config.train.batch_size=32 \
    --workdir=$WORKDIR
"
