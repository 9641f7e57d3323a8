#!/usr/bin/env bash
# Issue 10's harvest benchmark on a lent GPU, twice side by side: the configured LPG
# steps and four times as many, on the same 60-volume phantom (256 px, lite, seed 0).
# Both runs share the GPU and the CPU cores, so their stage times are those of a
# shared machine; the second answers whether a longer-trained LPG finds more of the
# unmarked lesions.
#
#   tools/gpu_harvest_steps.sh OUTDIR [SECONDS [HARVEST_BENCH_OPTION...]]
#
# Each run prints its stages as they start and is cut at SECONDS (default 480); the
# rounds it finished are printed from its project store at the end. Options after
# SECONDS go to both runs, e.g. --set lpg_ignore_known_lesions=true. Extra
# pure-Python packages (e.g. filterpy) may be put in ./.devdeps.
set -u
out=${1:?usage: gpu_harvest_steps.sh OUTDIR [SECONDS [HARVEST_BENCH_OPTION...]]}
seconds=${2:-480}
shift $(($# < 2 ? $# : 2))
shared_options=("$@")
mkdir -p "$out"
export PYTHONPATH="$PWD:$PWD/.devdeps${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=6
python=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
$python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
    | tee -a "$out/gpu.txt"
nproc | sed 's/^/cpu cores: /' | tee -a "$out/gpu.txt"

root=$(mktemp -d)
run() {  # NAME [extra harvest_bench options]
    local name=$1
    shift
    timeout "$seconds" $python benchmarks/harvest_bench.py --device cuda --volumes 60 \
        --size 256 --rounds 3 --out "$root/$name" "${shared_options[@]}" "$@" \
        >"$out/$name.txt" 2>&1
    $python - "$root/$name/project" >>"$out/$name.txt" 2>&1 <<'PY'
import json
import sys

from napari_lesion_harvest.harvest.report import format_round_table
from napari_lesion_harvest.store import HarvestProject

with HarvestProject.open(sys.argv[1]) as project:
    rounds = project.rounds.list()
    print("rounds in the store:", [(r.number, r.status) for r in rounds])
    print(format_round_table([r for r in rounds if r.status == "done"]))
    for record in rounds:
        m = {k: v for k, v in record.metrics.items() if k not in ("evaluation", "froc", "pr")}
        print(f"round {record.number} metrics:", json.dumps(m, default=str)[:2500])
PY
}
run steps_x1 &
run steps_x4 --lpg-steps 2400 --lpg-finetune-steps 800 &
wait
for name in steps_x1 steps_x4; do
    echo "== $name"
    cat "$out/$name.txt"
done
