"""A full disk (issue 27, item 3): one line naming the file, exit 2, no run left RUNNING, and `resume` once
there is room; free space checked before the trials. A small tmpfs is mounted by the tests (skipped
where mounting is not allowed).
"""
from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """A small tmpfs at `folder` (mounted by the test; skipped where mounting is not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_study_whose_checkpoints_cannot_fit_stops_before_its_trials(tmp_path, sample_data):
    """The check before the trials: free space against the student's checkpoints × the trials still to run."""
    from study.paths import StudyPaths
    from study.run.assets import check_space_for
    from test_study import write_space
    from trainables.errors import DiskFull

    space = load(write_space(tmp_path, sample_data, "small", {"algorithm": "grid"},
                             {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]}}))
    with tmpfs(tmp_path / "root", "60m") as root:
        with pytest.raises(DiskFull, match=rf"^not enough free space in {root}/small: 60\.0 MiB free, about "
                                           r"\d+\.\d MiB needed for the checkpoints of 2 trials; free some space"):
            check_space_for(space, StudyPaths.of("small", root), None, assets_built=True)
    check_space_for(space, StudyPaths.of("small", tmp_path), None, assets_built=True)   # the real disk has room


def load(path: Path):
    from study.space.schema import load_space

    return load_space(path)


def fill(folder: Path) -> Path:
    """Fill `folder`'s file system to the last byte with one file (deleted to free it)."""
    import os

    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
def test_a_full_disk_stops_the_study_in_one_line_and_resume_finishes_it(tmp_path, sample_data):
    """Item 3: the disk under --root fills as the trial starts: one line naming the path (exit 2), no run left
    RUNNING; once the space is freed, `kd-study resume` completes the study."""
    import time

    from test_study import cli, env, run_cli, study_runs, write_space

    name = "full"
    space = write_space(tmp_path, sample_data, name, {"algorithm": "random", "num_samples": 1},
                        {"sampler.name": {"type": "categorical", "choices": ["topk"]}})
    space.write_text(space.read_text().replace("num_workers: 2", "num_workers: 1"))
    with tmpfs(tmp_path / "studies", "200m") as root:
        log_path = tmp_path / "run.log"
        with open(log_path, "w") as log:
            driver = subprocess.Popen(cli(tmp_path, "run", str(space), "--quiet", "--no-report"), cwd=tmp_path,
                                      env=env(), stdout=log, stderr=subprocess.STDOUT)
            try:
                state = root / name / "study.json"
                deadline = time.monotonic() + 300
                while not (state.is_file() and "parent_run_id" in state.read_text()):   # the trial is about to start
                    assert driver.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
                    time.sleep(0.2)
                filler = fill(root)
                driver.wait(timeout=300)
            finally:
                if driver.poll() is None:
                    driver.kill()
                    driver.wait(timeout=60)
        output = log_path.read_text()
        assert driver.returncode == 2, output[-3000:]
        last = [line for line in output.splitlines() if line.strip()][-1]
        assert last.startswith(f"kd-study: error: no space left on device writing {root}/{name}"), output[-3000:]
        assert "Traceback" not in output and "unexpected pos" not in output
        _, parents, trials = study_runs(tmp_path, name)
        assert parents and all(run.info.status != "RUNNING" for run in parents + trials)

        filler.unlink()
        result = run_cli(tmp_path, "resume", name, "--quiet", "--no-report")
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads(state.read_text())["status"] == "finished"
    _, parents, trials = study_runs(tmp_path, name)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert [t.info.status for t in trials].count("FINISHED") == 1
    # A trial that met the full disk before Tune could record it is re-run afresh; its run stays, closed, saying why.
    for run in trials:
        assert run.info.status == "FINISHED" or "no space left on device" in (
            run.data.tags.get("kd_study.error", "") + run.data.tags.get("kd_study.ended_by", "")).lower(), run.data.tags


def test_a_checkpoint_cut_short_by_a_full_disk_is_one_line_naming_it(tmp_path):
    """torch.save on a full disk raises `RuntimeError: [enforce fail at inline_container.cc] . unexpected pos`;
    the checkpoint writer says instead which file found no space."""
    import torch

    from trainables.train.checkpoints import TrainState, save_train_state
    from trainables.errors import DiskFull

    state = TrainState(step=1, student={"w": torch.zeros(1 << 20)}, optimizer={}, scheduler={}, rank_table=None,
                       train_seconds=0.0, last_loss=0.0)
    with tmpfs(tmp_path / "small", "1m") as small:
        with pytest.raises(RuntimeError, match="unexpected pos|PytorchStreamWriter failed") as raw:
            torch.save(state.student, small / "raw.pt")                    # what the trial used to end with
        assert not isinstance(raw.value, DiskFull)
        (small / "raw.pt").unlink(missing_ok=True)
        with pytest.raises(DiskFull, match=rf"^no space left on device writing {small}/train_state.pt \("):
            save_train_state(str(small), state, steps_per_epoch=1, world=1)


def test_a_tuner_state_cut_short_by_a_full_disk_is_not_resumed_from(tmp_path):
    """Tune writes tuner.pkl as the study starts; a disk that fills then leaves it empty or cut short, and
    `resume` must start afresh rather than fail unpickling it ("Ran out of input")."""
    import pickle

    from study.run.tuner import written_whole

    whole = tmp_path / "tuner.pkl"
    whole.write_bytes(pickle.dumps({"state": list(range(1000))}))
    assert written_whole(whole)
    for cut in (0, 1, len(whole.read_bytes()) // 2):
        short = tmp_path / f"cut-{cut}.pkl"
        short.write_bytes(whole.read_bytes()[:cut])
        assert not written_whole(short)
    assert written_whole(tmp_path / "remote-or-missing.pkl")   # not readable here: left to Tune
