#!/usr/bin/env bash
# GPU check for sessions lent a GPU machine (run from the repository root there, after
# `pip install -e .`): step times per stage width for ResNet-20 and VGG-11 with the GPU-resident
# loader, then a quick full-method run against the large run. Writes docs/gpu-check-<device>.md.
set -euo pipefail
DATA=${DATA:-shared/data/cifar10-jpegq75}
OUT=${OUT_DIR:-/tmp/gpu-check}
dev=$(python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
report=docs/gpu-check-$dev.md
{
  echo "# GPU check on $dev ($(date -u +%F))"
  echo '```'
  python -m bench speed --preset quick --device cuda --bench-threads 0 --arch resnet20,vgg11 --channels-last-align 8
  python -m bench speed --preset quick --device cuda --bench-threads 0 --arch resnet20,vgg11 --channels-last-align 8 \
    --growth.batch-adapt true
  for m in large full; do
    python -m bench run --preset quick --device cuda --method $m --data-dir "$DATA" --out-dir "$OUT" --progress off | tail -1
  done
  python -m bench run --preset quick --device cuda --method full --growth.batch-adapt true --data-dir "$DATA" \
    --out-dir "$OUT" --progress off | tail -1
  echo '```'
} | tee "$report"
