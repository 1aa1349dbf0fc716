"""The install recipe leaves one faiss, and `kd-study --version` says which build it is.

faiss-cpu and faiss-gpu-cu12 both install the module `faiss`: together, one shadows the other.
The recipe is checked statically (scripts/bootstrap.sh --dry-run + pyproject's extras), since the
GPU wheels are not on these offline machines; the environment the tests run in is checked for real.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from study.run.versions import check_one_faiss, faiss_distributions

tomllib = pytest.importorskip("tomllib")   # Python >= 3.11
ROOT = Path(__file__).resolve().parents[1]
# Every distribution on PyPI that installs the top-level module `faiss`.
FAISS_DISTRIBUTIONS = {"faiss-cpu", "faiss-gpu", "faiss-gpu-cu11", "faiss-gpu-cu12"}


def bootstrap_commands(*targets: str) -> list[str]:
    done = subprocess.run(["bash", "scripts/bootstrap.sh", "--dry-run", *targets], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def installed_requirements(extras: list[str]) -> set[str]:
    """The distribution names `pip install -e .[extras]` asks for directly (core dependencies + the extras')."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return {re.match(r"[A-Za-z0-9_.\-]+", r).group(0).lower().replace("_", "-") for r in requirements}


def recipe(*targets: str) -> tuple[set[str], set[str]]:
    """(faiss distributions the bootstrap installs, those it uninstalls first) for `targets`."""
    commands = bootstrap_commands(*targets)
    install = [c for c in commands if re.search(r"pip install -q -e \.\[", c)]
    uninstall = [c for c in commands if "pip uninstall" in c]
    assert len(install) == 1 and len(uninstall) == 1, commands
    extras = re.search(r"\.\[([^\]]*)\]", install[0]).group(1).split(",")
    assert commands.index(uninstall[0]) < commands.index(install[0])   # the other build goes first
    return installed_requirements(extras) & FAISS_DISTRIBUTIONS, set(uninstall[0].split()) & FAISS_DISTRIBUTIONS


@pytest.mark.parametrize("targets, faiss", [((), "faiss-cpu"), (("test",), "faiss-cpu"), (("test", "bench"), "faiss-cpu"),
                                            (("gpu",), "faiss-gpu-cu12"), (("gpu", "test"), "faiss-gpu-cu12"),
                                            (("cpu", "test"), "faiss-cpu")])
def test_every_bootstrap_target_installs_exactly_one_faiss_and_removes_the_others(targets, faiss):
    installs, removes = recipe(*targets)
    assert installs == {faiss}
    assert removes == FAISS_DISTRIBUTIONS - {faiss}


def test_no_core_dependency_installs_faiss():
    assert installed_requirements([]) & FAISS_DISTRIBUTIONS == set()


def test_asking_for_both_builds_is_refused():
    done = subprocess.run(["bash", "scripts/bootstrap.sh", "--dry-run", "gpu", "cpu"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "cpu or gpu, not both" in done.stderr


def test_this_environment_imports_faiss_from_one_distribution():
    assert len(faiss_distributions()) == 1, faiss_distributions()
    check_one_faiss()


def test_two_faiss_distributions_are_a_one_line_error(monkeypatch):
    import importlib.metadata

    from trainables.errors import BadInput

    monkeypatch.setattr(importlib.metadata, "packages_distributions",
                        lambda: {"faiss": ["faiss-cpu", "faiss-gpu-cu12"]})
    with pytest.raises(BadInput, match=r"2 installed distributions provide the module faiss \(faiss-cpu, faiss-gpu-cu12\)"):
        check_one_faiss()


def test_version_names_the_faiss_build_cuda_devices_and_libraries_without_importing_them_all():
    """Fast by construction: Ray, MLflow and Optuna are read from their metadata, not imported."""
    probe = ("import sys\nfrom study.cli.verbs import main\ntry:\n    main(['--version'])\nexcept SystemExit as e:\n"
             "    assert e.code in (0, None)\nprint(sorted(m for m in ('ray', 'mlflow', 'optuna') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"kd-study \S+", lines[0])
    assert re.fullmatch(r"faiss \S+ \((faiss-cpu, CPU build|faiss-gpu-cu12, GPU build, \d+ GPUs? visible to it)\)",
                        lines[1])
    assert lines[2].startswith("CUDA devices: ")
    assert re.fullmatch(r"torch \S+, ray \S+, mlflow \S+, optuna \S+", lines[3])
    assert lines[4] == "[]"
