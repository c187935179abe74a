#!/bin/bash
# Wall-clock on this machine of (1) the smoke ablation sweep (18 short runs) inline and through the local
# launcher, 2 runs at once, and (2) one run on 1 process and on 2 DDP processes (torchrun). It uses every
# core: run it with nothing else running. Prints CSV rows: what,seconds.
# usage: scripts/launcher_wallclock.sh [DATA_DIR]
set -euo pipefail
DATA=${1:-../shared/data/cifar10-jpegq75}
PY=${PY:-.venv/bin/python}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
secs() { local t0=$EPOCHREALTIME; "$@" > "$OUT/log" 2>&1 || { cat "$OUT/log" >&2; exit 1; }; awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $t0}"; }
echo "what,seconds"
echo "sweep ablation smoke: inline 2 threads,$(secs $PY -m bench sweep ablation --preset smoke --data-dir $DATA --out-dir $OUT/a --threads 2 --progress off)"
echo "sweep ablation smoke: inline 1 thread,$(secs $PY -m bench sweep ablation --preset smoke --data-dir $DATA --out-dir $OUT/b --threads 1 --progress off)"
echo "sweep ablation smoke: local 2 at once x 1 thread,$(secs $PY -m bench sweep ablation --preset smoke --data-dir $DATA --out-dir $OUT/c --threads 1 --launcher local --max-parallel 2 --progress off)"
RUN=(--preset smoke --method full --train-subset 4096 --epochs 3 --data-dir $DATA --progress off)
echo "run resnet20 full 4096 images 3 epochs: 1 process 1 thread,$(secs $PY -m bench run "${RUN[@]}" --out-dir $OUT/d --threads 1)"
echo "run resnet20 full 4096 images 3 epochs: 1 process 2 threads,$(secs $PY -m bench run "${RUN[@]}" --out-dir $OUT/e --threads 2)"
echo "run resnet20 full 4096 images 3 epochs: torchrun 2 processes x 1 thread,$(secs $PY -m torch.distributed.run --standalone --nproc_per_node=2 -m bench run "${RUN[@]}" --out-dir $OUT/f --threads 1)"
