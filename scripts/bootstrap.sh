#!/usr/bin/env bash
# Create ./.venv and install kd-study into it.  Usage: bash scripts/bootstrap.sh [--dry-run] [test|bench|gpu|cpu]...
# torch goes in first, pinned to the release whose CPU wheel these offline machines carry, so that
# resolving the rest never pulls a multi-GB CUDA build. Elsewhere set KD_TORCH_SPEC (e.g. "torch")
# and, for CPU-only wheels, PIP_EXTRA_INDEX_URL to the PyTorch CPU index.
# One faiss: the `cpu` extra (faiss-cpu) unless `gpu` (faiss-gpu-cu12) is named. Both install the
# module `faiss`, so the other build is uninstalled first (a venv bootstrapped for the CPU, then with
# `gpu`, keeps one), and the last step checks that one distribution provides it.
# --dry-run prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
dry=""
targets=()
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry=1 ;;
        *) targets+=("$arg") ;;
    esac
done
faiss=""
for target in ${targets[@]+"${targets[@]}"}; do
    case "$target" in
        cpu | gpu)
            if [ -n "$faiss" ] && [ "$faiss" != "$target" ]; then
                echo "bootstrap: name cpu or gpu, not both: each installs the module faiss" >&2; exit 2
            fi
            faiss=$target ;;
    esac
done
if [ -z "$faiss" ]; then faiss=cpu; targets+=(cpu); fi
if [ "$faiss" = gpu ]; then other_faiss=(faiss-cpu faiss-gpu-cu11 faiss-gpu); else other_faiss=(faiss-gpu-cu12 faiss-gpu-cu11 faiss-gpu); fi
extras=$(IFS=,; echo "${targets[*]}")
run() { if [ -n "$dry" ]; then echo "$*"; else "$@"; fi; }

[ -n "$dry" ] || [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
run .venv/bin/python -m pip install -q --upgrade pip
run .venv/bin/python -m pip install -q "${KD_TORCH_SPEC:-torch==2.13.0}"
run .venv/bin/python -m pip uninstall -qq -y "${other_faiss[@]}"   # -qq: silent when absent
run .venv/bin/python -m pip install -q -e ".[$extras]"
run .venv/bin/python -c "import study.run.versions as v; v.check_one_faiss(); print('kd-study installed; ' + v.faiss_line() + '; ' + v.libraries_line())"
