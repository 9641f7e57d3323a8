#!/usr/bin/env bash
# The GPU checks in one command of about 8 minutes (defaults 330 + 150 s), for a lent
# GPU machine with PyTorch installed: the LPG benchmark (paper MSCN at 512 px: scan
# sweep, eager vs compiled scan, FLOPs, bf16 agreement, training at batch 16 and 32
# with the GPU's idle share), then the harvest benchmark (60 phantom volumes at
# 256 px, lite) on CUDA for the rounds that fit.
#
#   tools/gpu_checks.sh OUTDIR [LPG_SECONDS] [HARVEST_SECONDS]
#
# Each part runs under its own time limit and prints as it goes, so a part cut
# short still reports what it measured; the rounds the harvest finished are
# printed from the project store at the end. Extra pure-Python packages (e.g.
# filterpy) may be put in ./.devdeps, which is added to PYTHONPATH.
set -u
out=${1:?usage: gpu_checks.sh OUTDIR [LPG_SECONDS] [HARVEST_SECONDS]}
lpg_seconds=${2:-330}
harvest_seconds=${3:-150}
mkdir -p "$out"
export PYTHONPATH="$PWD:$PWD/.devdeps${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
    --format=csv | tee "$out/gpu.txt"
$python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', \
torchvision.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
nproc | sed 's/^/cpu cores: /' | tee -a "$out/gpu.txt"

echo "== LPG (limit ${lpg_seconds} s)"
timeout "$lpg_seconds" $python benchmarks/lpg_gpu_bench.py --train-batches 16,32 \
    --budget-s $((lpg_seconds - 60)) --out "$out/lpg_gpu.jsonl" 2>&1 | tee "$out/lpg_gpu.txt"

echo "== harvest (limit ${harvest_seconds} s)"
project_root=$(mktemp -d)/harvest
timeout "$harvest_seconds" $python benchmarks/harvest_bench.py --device cuda \
    --volumes 60 --size 256 --rounds 3 --out "$project_root" 2>&1 | tee "$out/harvest_gpu.txt"

$python - "$project_root/project" <<'EOF' 2>&1 | tee -a "$out/harvest_gpu.txt"
import json
import sys

from napari_lesion_harvest.harvest.report import format_round_table
from napari_lesion_harvest.store import HarvestProject

with HarvestProject.open(sys.argv[1]) as project:
    rounds = project.rounds.list()
    print("rounds in the store:", [(r.number, r.status) for r in rounds])
    done = [r for r in rounds if r.status == "done"]
    print(format_round_table(done))
    for record in rounds:
        print(f"round {record.number} metrics:", json.dumps(record.metrics, default=str)[:3000])
EOF
