"""bench/gpu_smoke.sh: where there is no GPU it stops at once with one clear line (it runs for real only on a GPU)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "bench" / "gpu_smoke.sh"


def fake_nvidia_smi(folder: Path, listing: str | None) -> dict[str, str]:
    """An environment whose `nvidia-smi -L` prints `listing` (None: fails, as on a machine without a driver)."""
    folder.mkdir(exist_ok=True)
    tool = folder / "nvidia-smi"
    body = f"echo '{listing}'\n" if listing else "echo 'NVIDIA-SMI has failed' >&2; exit 9\n"
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", "KD_PYTHON": sys.executable}


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_without_a_gpu_it_exits_2_before_installing_anything(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT)], env=fake_nvidia_smi(tmp_path / "bin", None), cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip() == "gpu_smoke: no NVIDIA GPU here (nvidia-smi lists none): run it on a GPU machine"


@pytest.mark.slow
def test_a_driver_without_a_gpu_visible_to_torch_exits_2_naming_the_torch_build(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run the smoke")
    done = subprocess.run(["bash", str(SCRIPT)], env=fake_nvidia_smi(tmp_path / "bin", "GPU 0: Fake (UUID: none)"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "gpu_smoke: no CUDA GPU visible to torch" in done.stderr and len(done.stderr.strip().splitlines()) == 1
