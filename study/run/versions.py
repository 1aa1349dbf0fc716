"""What `kd-study --version` prints, and the one-faiss rule: the faiss build, CUDA devices, the libraries' versions.

faiss-cpu and faiss-gpu-cu12 both install the module `faiss`; installed together, one silently
shadows the other. So kd-study depends on neither directly: the `cpu` extra brings faiss-cpu, the
`gpu` extra faiss-gpu-cu12, and scripts/bootstrap.sh installs exactly one of them (the other
uninstalled first). `check_one_faiss` refuses a run where two distributions provide `faiss`.

Fast on purpose (a second or two): Ray's, MLflow's and Optuna's versions are read from their
installed metadata, not imported; only torch (for CUDA) and faiss (for its build) are.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os

from trainables.errors import BadInput

FAISS_MODULE = "faiss"
LIBRARIES = ("ray", "mlflow", "optuna")
INSTALL_HINT = "bash scripts/bootstrap.sh installs faiss-cpu; `bash scripts/bootstrap.sh gpu` installs faiss-gpu-cu12"


def faiss_distributions() -> list[str]:
    """The installed distributions that provide the module `faiss` (exactly one in a working install)."""
    return sorted(set(importlib.metadata.packages_distributions().get(FAISS_MODULE, [])))


def check_one_faiss() -> None:
    """BadInput unless `faiss` imports from one distribution (or from one without pip metadata, e.g. conda's)."""
    found = faiss_distributions()
    if len(found) > 1:
        raise BadInput(f"{len(found)} installed distributions provide the module faiss ({', '.join(found)}), so one "
                       f"shadows the other: uninstall them all, then install one ({INSTALL_HINT})")
    if importlib.util.find_spec(FAISS_MODULE) is None:
        raise BadInput(f"faiss is not installed: {INSTALL_HINT} (or pip install 'kd-study[cpu]' / 'kd-study[gpu]')")


def version_text() -> str:
    """kd-study's version, then one line each: faiss (distribution, CPU/GPU build), CUDA devices, the libraries."""
    return "\n".join([f"kd-study {_version('kd-study')}", faiss_line(), cuda_line(), libraries_line()])


def faiss_line() -> str:
    found = faiss_distributions()
    if len(found) > 1:
        return f"faiss: {len(found)} distributions provide the module ({', '.join(found)}): one shadows the other"
    if importlib.util.find_spec(FAISS_MODULE) is None:
        return f"faiss: not installed ({INSTALL_HINT})"
    import faiss

    gpu_build = hasattr(faiss, "StandardGpuResources")   # the GPU symbols exist only in a GPU build
    gpus = faiss.get_num_gpus() if gpu_build else 0
    source = found[0] if found else "no pip metadata"
    where = f", {gpus} GPU{'s' if gpus != 1 else ''} visible to it" if gpu_build else ""
    return f"faiss {faiss.__version__} ({source}, {'GPU' if gpu_build else 'CPU'} build{where})"


def cuda_line() -> str:
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    mask = f", CUDA_VISIBLE_DEVICES={visible}" if visible is not None else ""
    if torch.version.cuda is None:
        return f"CUDA devices: none (torch {torch.__version__} is a CPU build{mask})"
    if not torch.cuda.is_available():
        return f"CUDA devices: none visible (torch {torch.__version__}, CUDA {torch.version.cuda}{mask})"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"CUDA devices: {len(names)} ({'; '.join(f'{i}: {n}' for i, n in enumerate(names))}{mask})"


def libraries_line() -> str:
    import torch

    return ", ".join([f"torch {torch.__version__}", *(f"{name} {_version(name)}" for name in LIBRARIES)])


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:   # run from a checkout that is not installed
        return "unknown (not installed)"
