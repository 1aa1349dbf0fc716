#!/usr/bin/env bash
# Create ./.venv and install kd-study into it.  Usage: bash scripts/bootstrap.sh [test|bench|gpu]...
# torch goes in first, pinned to the release whose CPU wheel these offline machines carry, so that
# resolving the rest never pulls a multi-GB CUDA build. Elsewhere set KD_TORCH_SPEC (e.g. "torch")
# and, for CPU-only wheels, PIP_EXTRA_INDEX_URL to the PyTorch CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=$(IFS=,; echo "$*")
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${KD_TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
.venv/bin/python -c "import torch, study, trainables; print('kd-study installed; torch', torch.__version__)"
