"""kd-study CLI: help for every command, and one-line errors with exit ≠ 0 before anything runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from study.cli import main

COMMANDS = ("run", "train", "resume", "report", "export")
SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def kd_study(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter, as a user runs it."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "study.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def space_file(tmp_path: Path, **study) -> Path:
    raw = {"base": {"data": {"pool_depth": 10}, "sampler": {"k": 4}},
           "search": {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]},
                      "loss.gamma1": {"type": "float", "low": 0, "high": 4, "when": {"loss.name": "wkl"}}},
           "study": {"name": "cli-test", **study}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("kd-study: error: "), stderr
    return lines[0]


def test_help_lists_every_command(tmp_path):
    result = kd_study("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout
    for option in ("--ray-address", "--tracking-uri"):
        assert option in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert f"kd-study {command}" in text and len(text.splitlines()) > 8
    assert "--tracking-uri" in text  # global options work after the command too


def test_unknown_key_in_space_exits_2_with_one_line(tmp_path):
    path = space_file(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["search"]["loss.gamma1"]["upper"] = 3
    path.write_text(yaml.safe_dump(raw))
    result = kd_study("run", str(path), cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "space.yaml: search.loss.gamma1.upper: unknown key" in line
    assert not (tmp_path / "kd-studies").exists()


@pytest.mark.parametrize("change,expected", [
    ({"search": {"loss.gamma1": {"type": "float", "low": -2, "high": 4}}}, "search.loss.gamma1: -2.0 is invalid"),
    ({"fixed": {"loss.gamma1": -1}, "search": {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]}}},
     "fixed.loss.gamma1: -1 is invalid"),
    ({"search": {"sampler.k": {"type": "categorical", "choices": [4, 16]}}}, "search.sampler.k: 16 is invalid: sampler.k=16 is larger than data.pool_depth=10"),
    ({"base": {"data": {"pool_depth": 10, "train": "msmarco"}}}, "unknown dataset id 'msmarco'"),
], ids=["gamma1<0 range", "gamma1<0 fixed", "k>pool", "unknown dataset"])
def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, change, expected):
    path = space_file(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw.update(change)
    path.write_text(yaml.safe_dump(raw))
    code = main(["--root", str(tmp_path / "studies"), "run", str(path)])
    assert code == 2
    assert expected in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "studies").exists()


def test_unreachable_tracking_server_fails_fast(tmp_path):
    started = time.perf_counter()
    result = kd_study("--tracking-uri", "http://127.0.0.1:9", "--root", str(tmp_path / "studies"),
                      "run", str(space_file(tmp_path)), cwd=tmp_path)
    elapsed = time.perf_counter() - started
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert "http://127.0.0.1:9" in line and "unreachable" in line
    assert elapsed < 30, elapsed
    assert not (tmp_path / "studies").exists()   # nothing prepared, no trial started


def test_unreachable_ray_cluster_fails_fast(tmp_path):
    result = kd_study("--ray-address", "127.0.0.1:9", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                      "--root", str(tmp_path / "studies"), "run", str(space_file(tmp_path)), cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in one_error_line(result.stderr)
    assert not (tmp_path / "studies").exists()


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    assert main(["--root", str(tmp_path / "studies"), "run", str(SPACES / "wkl_paper.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "wkl_paper: grid, 28 trials" in out and "28 grid points" in out
    assert "loss.gamma1=6.0, loss.alpha=1.5" in out
    assert not (tmp_path / "studies").exists()


def test_run_hands_the_loaded_space_and_options_to_the_runner(tmp_path, monkeypatch, capsys):
    """The CLI loads the space once (with its overrides and --set) and the runner gets it as is."""
    import study.runner
    from study.space import SearchSpace

    handed = {}

    def run_study(space, opts):
        handed.update(space=space, opts=opts)
        return study.runner.StudyOutcome(space.name, Path(opts.root) / space.name, space.num_samples,
                                         finished=["t1", "t2", "t3"])

    monkeypatch.setattr(study.runner, "run_study", run_study)
    studies = tmp_path / "studies"
    assert main(["--root", str(studies), "run", str(space_file(tmp_path)), "--num-samples", "3",
                 "--set", "optim.epochs=2", "--quiet"]) == 0
    space, opts = handed["space"], handed["opts"]
    assert isinstance(space, SearchSpace) and space.num_samples == 3 and space.base.optim.epochs == 2
    assert opts.root == str(studies) and opts.verbose == 0
    assert f"study folder: {studies / 'cli-test'}" in capsys.readouterr().out


@pytest.mark.parametrize("ended,code,expected", [
    ({"finished": ["t1"]}, 130,
     "study cli-test interrupted with 1 of 3 trials done; continue it with `kd-study resume cli-test`"),
    ({"finished": ["t1", "t2"], "errored": [("t3", "CUDA out of memory")]}, 1,
     "1 of 3 trials failed; trial t3: CUDA out of memory; 2 finished trials are kept"),
], ids=["interrupted", "a trial failed"])
def test_an_unfinished_study_exits_nonzero_and_says_how_to_continue(tmp_path, monkeypatch, capsys, ended, code,
                                                                   expected):
    import study.runner

    monkeypatch.setattr(study.runner, "run_study",
                        lambda space, opts: study.runner.StudyOutcome(space.name, tmp_path, 3, **ended))
    assert main(["--root", str(tmp_path / "studies"), "run", str(space_file(tmp_path))]) == code
    assert expected in one_error_line(capsys.readouterr().err)


def test_resume_prints_the_trials_by_the_studys_metric(tmp_path, monkeypatch, capsys):
    import study.runner

    studies = tmp_path / "studies"
    (studies / "cli-test").mkdir(parents=True)
    (studies / "cli-test" / "study.json").write_text(json.dumps({"metrics": ["dev_mrr_at_10"]}))
    row = {"trial_id": "t1", "status": "TERMINATED", "loss.name": "kl", "dev_mrr_at_10": 0.25}

    def resume_study(name, opts):
        return study.runner.StudyOutcome(name, studies / name, 1, finished=["t1"], rows=[row], best=row)

    monkeypatch.setattr(study.runner, "resume_study", resume_study)
    assert main(["--root", str(studies), "resume", "cli-test"]) == 0
    assert "best trial: t1 (dev_mrr_at_10 = 0.2500)" in capsys.readouterr().out


def test_cli_overrides_are_validated_too(tmp_path, capsys):
    code = main(["run", str(space_file(tmp_path)), "--algorithm", "grid", "--dry-run"])
    assert code == 2
    assert "grid mode needs `choices` or a stepped range" in one_error_line(capsys.readouterr().err)


def test_resume_of_an_unknown_study(tmp_path, capsys):
    (tmp_path / "studies").mkdir()
    assert main(["--root", str(tmp_path / "studies"), "resume", "nope"]) == 2
    assert "no study named 'nope'" in one_error_line(capsys.readouterr().err)


def test_existing_study_is_not_overwritten(tmp_path, capsys):
    studies = tmp_path / "studies"
    (studies / "cli-test").mkdir(parents=True)
    (studies / "cli-test" / "study.json").write_text("{}")
    assert main(["--root", str(studies), "run", str(space_file(tmp_path))]) == 2
    assert "kd-study resume cli-test" in one_error_line(capsys.readouterr().err)


def test_train_with_a_bad_config(tmp_path, capsys):
    config = tmp_path / "trial.yaml"
    config.write_text(yaml.safe_dump({"loss": {"name": "wkl", "gamma1": -1}}))
    assert main(["train", str(config)]) == 2
    assert "trial.yaml: loss.gamma1: Input should be greater than or equal to 0" in one_error_line(capsys.readouterr().err)


def test_missing_space_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such file" in one_error_line(capsys.readouterr().err)


def test_a_value_error_from_numpy_is_a_bug_not_bad_input(tmp_path, monkeypatch, capsys):
    """Only kd-study's own BadInput errors exit 2: numpy's ValueError inside a trial is a bug (exit 1 + traceback)."""
    import numpy as np

    import study.runner

    def crash(*args, **kwargs):
        np.zeros(-1)  # ValueError: negative dimensions are not allowed

    monkeypatch.setattr(study.runner, "train_single", crash)
    config = tmp_path / "trial.yaml"
    config.write_text("name: t\n")
    code = main(["train", str(config)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" in err and "negative dimensions" in err
    assert "internal error" in err.splitlines()[-1]


def test_bad_input_and_failure_errors_carry_their_exit_status():
    from study.preflight import UnreachableError
    from study.report import ReportError
    from study.runner import StudyError
    from study.tracking import TrackingError
    from trainables.config import ConfigError
    from trainables.data.types import DataError
    from trainables.errors import BadInput, Failure
    from trainables.models import ModelError

    for bad_input in (ConfigError, DataError, ModelError, ReportError, TrackingError):
        assert issubclass(bad_input, BadInput) and bad_input("x").exit_code == 2
    for failure in (StudyError, UnreachableError):
        assert issubclass(failure, Failure) and failure("x").exit_code == 1
