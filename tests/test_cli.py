"""kd-study CLI: help for every command, and one-line errors with exit ≠ 0 before anything runs."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from study.cli.verbs import main

COMMANDS = ("run", "train", "resume", "report", "export", "confirm")
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
    from study.console import console
    from study.space.schema import load_space

    console.print_plan(load_space(SPACES / "wkl_paper.yaml"))  # MS MARCO: its data needs a network
    out = capsys.readouterr().out
    assert "wkl_paper: grid, 28 trials" in out and "28 grid points" in out
    assert "loss.gamma1=6.0, loss.alpha=1.5" in out
    assert main(["--root", str(tmp_path / "studies"), "run", str(space_file(tmp_path)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "cli-test: " in out and "checked data.train: quickstart" in out and "checked eval.dev: quickstart" in out
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize("name, trials", [("scifact_sampling_v3", 42), ("scifact_wkl_v3", 36)])
def test_the_v3_spaces_dry_run_with_their_contrasts_and_controls(tmp_path, monkeypatch, capsys, shared_data, name, trials):
    """The evidence-v3 spaces load, their declared contrasts and controls validate on the grid, and every data set
    they name opens (the full SciFact and DL19 subset at `../shared/data`, as the spaces' ids say)."""
    (tmp_path / "shared").symlink_to(shared_data.parent)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert main(["--root", str(tmp_path / "studies"), "run", str(SPACES / f"{name}.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{name}: grid, " in out and f"= {trials} trials" in out and "checked eval.dl[0]: " in out
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize("broken", ["missing folder", "corrupt corpus line", "qrels naming absent docs",
                                    "missing queries.jsonl", "unknown irds id"])
def test_dry_run_opens_every_data_set_and_fails_in_seconds(tmp_path, capsys, broken):
    """A typo in an evaluation set fails `--dry-run` (and `run`) before Ray starts, not at a trial's end."""
    import time

    from tests.test_data import _broken_sets

    dataset_id = _broken_sets(tmp_path)[broken][0]
    path = space_file(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["base"]["eval"] = {"beir": [{"id": dataset_id, "split": "test", "name": "typo"}]}
    path.write_text(yaml.safe_dump(raw))
    started = time.perf_counter()
    for extra in (["--dry-run"], []):
        assert main(["--root", str(tmp_path / "studies"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlruns.db'}",
                     "run", str(path), *extra]) == 2
        err = capsys.readouterr().err   # kd-study's own warnings (skipped qrels) stay on the console too
        assert "eval.beir[0]: " in one_error_line("\n".join(line for line in err.splitlines()
                                                            if not line.startswith("kd-study: warning: ")))
    assert time.perf_counter() - started < 6.0   # both commands: each well under 3 s
    assert not (tmp_path / "studies").exists() and not (tmp_path / "mlruns.db").exists()


def test_run_hands_the_loaded_space_and_options_to_the_runner(tmp_path, monkeypatch, capsys):
    """The CLI loads the space once (with its overrides and --set) and the runner gets it as is."""
    import study.run.runner
    from study.space.schema import SearchSpace

    handed = {}

    def run_study(space, opts):
        handed.update(space=space, opts=opts)
        return study.run.runner.StudyOutcome(space.name, Path(opts.root) / space.name, space.num_samples,
                                         finished=["t1", "t2", "t3"])

    monkeypatch.setattr(study.run.runner, "run_study", run_study)
    studies = tmp_path / "studies"
    assert main(["--root", str(studies), "run", str(space_file(tmp_path)), "--num-samples", "3",
                 "--set", "optim.epochs=2", "--quiet"]) == 0
    space, opts = handed["space"], handed["opts"]
    assert isinstance(space, SearchSpace) and space.num_samples == 3 and space.base.optim.epochs == 2
    assert opts.root == str(studies) and opts.verbose == 0
    assert f"study folder: {studies / 'cli-test'}" in capsys.readouterr().out


@pytest.mark.parametrize("ended,code,expected", [
    ({"finished": ["t1"]}, 130,
     "study cli-test interrupted with 1 of 3 trials done; continue it with `kd-study resume cli-test --root {root}`"),
    ({"finished": ["t1", "t2"], "errored": [("t3", "CUDA out of memory")]}, 1,
     "1 of 3 trials failed; trial t3: CUDA out of memory; 2 finished trials are kept"),
], ids=["interrupted", "a trial failed"])
def test_an_unfinished_study_exits_nonzero_and_says_how_to_continue(tmp_path, monkeypatch, capsys, ended, code,
                                                                   expected):
    import study.run.runner

    monkeypatch.setattr(study.run.runner, "run_study",
                        lambda space, opts: study.run.runner.StudyOutcome(space.name, tmp_path, 3, **ended))
    assert main(["--root", str(tmp_path / "studies"), "run", str(space_file(tmp_path))]) == code
    assert expected.format(root=tmp_path / "studies") in one_error_line(capsys.readouterr().err)


def test_resume_prints_the_trials_by_the_studys_metric(tmp_path, monkeypatch, capsys):
    import study.run.runner

    studies = tmp_path / "studies"
    (studies / "cli-test").mkdir(parents=True)
    (studies / "cli-test" / "study.json").write_text(json.dumps({"metrics": ["dev_mrr_at_10"]}))
    row = {"trial_id": "t1", "status": "TERMINATED", "loss.name": "kl", "dev_mrr_at_10": 0.25}

    def resume_study(name, opts):
        return study.run.runner.StudyOutcome(name, studies / name, 1, finished=["t1"], rows=[row], best=row)

    monkeypatch.setattr(study.run.runner, "resume_study", resume_study)
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

    import study.run.single

    def crash(*args, **kwargs):
        np.zeros(-1)  # ValueError: negative dimensions are not allowed

    monkeypatch.setattr(study.run.single, "train_single", crash)
    config = tmp_path / "trial.yaml"
    config.write_text("name: t\n")
    code = main(["train", str(config)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" in err and "negative dimensions" in err
    assert "internal error" in err.splitlines()[-1]


def test_bad_input_and_failure_errors_carry_their_exit_status():
    from study.run.preflight import UnreachableError
    from study.report import ReportError
    from study.run.runner import StudyError
    from study.track.tracking import TrackingError
    from trainables.config import ConfigError
    from trainables.data.types import DataError
    from trainables.errors import BadInput, Failure
    from trainables.models.encoders import ModelError

    for bad_input in (ConfigError, DataError, ModelError, ReportError, TrackingError):
        assert issubclass(bad_input, BadInput) and bad_input("x").exit_code == 2
    for failure in (StudyError, UnreachableError):
        assert issubclass(failure, Failure) and failure("x").exit_code == 1


# ---- bad inputs: one line, the right exit status, nothing created (issue #17) -----------------------------
def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stored_study(cwd: Path, port: int) -> None:
    """A study folder whose state names a password-protected store (as `run` wrote it)."""
    folder = cwd / "kd-studies" / "stored"
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps({"tracking_uri": f"http://user:secret@127.0.0.1:{port}"}))


def empty_store(cwd: Path, port: int) -> None:
    """An MLflow store holding no study."""
    from study.track.tracking import check_tracking

    check_tracking(f"sqlite:///{cwd / 'mlruns.db'}")


def input_files(cwd: Path) -> None:
    """The files the table's command lines name, in the folder they run in."""
    space_file(cwd)
    trial = {"loss": {"name": "kl"}}
    files = {
        "trial.yaml": yaml.safe_dump(trial),
        "escape_trial.yaml": yaml.safe_dump({**trial, "name": "../escape_train"}),
        "slash_trial.yaml": yaml.safe_dump({**trial, "name": "a/b"}),
        "empty.yaml": "",
        "comments.yaml": "# a trial config, some day\n",
        "braces.yaml": "{}\n",
        "list.yaml": "- loss.name: kl\n",
        "scalar.yaml": "loss.name=kl\n",
        "escape_space.yaml": yaml.safe_dump({**yaml.safe_load((cwd / "space.yaml").read_text()),
                                             "study": {"name": "../escape"}}),
        "empty_base_space.yaml": yaml.safe_dump({**yaml.safe_load((cwd / "space.yaml").read_text()),
                                                 "base": "empty.yaml"}),
    }
    for name, text in files.items():
        (cwd / name).write_text(text)


NOT_A_NAME = (r"expected letters, digits, '\.', '_' or '-', starting with a letter or digit \(a folder name\), "
              r"at most 100 characters")
UNREACHABLE = r"MLflow tracking server http://user:\*\*\*@127\.0\.0\.1:\d+ is unreachable"
NO_STUDY = r"no study named 'nope': not in \S+/kd-studies, and no MLflow store at sqlite:///\S+/mlruns\.db$"
# (label, command line, exit status, regex on the one stderr line, set-up, paths it may create)
BAD_INPUTS = [
    # 1. credentials never shown
    ("tracking server password", ["--tracking-uri", "http://user:secret@127.0.0.1:{port}", "run", "space.yaml"], 2,
     UNREACHABLE, None, ()),
    ("optuna storage password", ["--tracking-uri", "sqlite:///{cwd}/m.db", "run", "space.yaml", "--optuna-storage",
                                 "postgresql://user:secret@127.0.0.1:{port}/db"], 2,
     r"--optuna-storage postgresql://user:\*\*\*@127\.0\.0\.1:\d+/db is not usable", None, ()),
    ("stored password on resume", ["resume", "stored"], 2, UNREACHABLE, stored_study, ()),
    ("tracking password on report", ["--tracking-uri", "http://user:secret@127.0.0.1:{port}", "report", "nope"], 2,
     UNREACHABLE, None, ()),
    ("tracking password on export", ["--tracking-uri", "http://user:secret@127.0.0.1:{port}", "export", "nope"], 2,
     UNREACHABLE, None, ()),
    # 3. one name rule
    ("run --name ../escape", ["run", "space.yaml", "--name", "../escape"], 2, "--name '../escape': " + NOT_A_NAME,
     None, ()),
    ("study.name ../escape", ["run", "escape_space.yaml"], 2,
     r"escape_space\.yaml: study\.name: " + NOT_A_NAME + ", got '../escape'", None, ()),
    ("resume ../escape", ["resume", "../escape"], 2, "study name '../escape': " + NOT_A_NAME, None, ()),
    ("report ../escape", ["report", "../escape"], 2, "study name '../escape': " + NOT_A_NAME, None, ()),
    ("export ../escape", ["export", "../escape"], 2, "study name '../escape': " + NOT_A_NAME, None, ()),
    ("export -o with ../escape", ["export", "../escape", "-o", "best.yaml"], 2, "study name '../escape'", None, ()),
    ("train --name ../escape_train", ["train", "trial.yaml", "--name", "../escape_train"], 2,
     "--name '../escape_train': " + NOT_A_NAME, None, ()),
    ("trial name ../escape_train", ["train", "escape_trial.yaml"], 2,
     r"escape_trial\.yaml: name: " + NOT_A_NAME + ", got '../escape_train'", None, ()),
    ("trial name a/b", ["train", "slash_trial.yaml"], 2, r"slash_trial\.yaml: name: " + NOT_A_NAME, None, ()),
    ("report of an unknown study", ["report", "nope"], 2, NO_STUDY, None, ()),
    ("export of an unknown study", ["export", "nope"], 2, NO_STUDY, None, ()),
    ("report, study not in the store", ["report", "nope"], 2, r"no study named 'nope' in sqlite:///\S+/mlruns\.db",
     empty_store, ()),
    ("export, study not in the store", ["export", "nope"], 2, r"no study named 'nope' in sqlite:///\S+/mlruns\.db",
     empty_store, ()),
    # 4. empty or non-mapping configs
    ("empty trial config", ["train", "empty.yaml"], 2, r"empty\.yaml: empty file \(expected a trial config", None, ()),
    ("comments only", ["train", "comments.yaml"], 2, r"comments\.yaml: empty file \(expected a trial config", None,
     ()),
    ("empty mapping", ["train", "braces.yaml"], 2, r"braces\.yaml: empty trial config: give at least", None, ()),
    ("a list", ["train", "list.yaml"], 2, r"list\.yaml: expected a trial config \(a YAML mapping of fields\) at the "
     r"top level, got a list", None, ()),
    ("a scalar", ["train", "scalar.yaml"], 2, r"scalar\.yaml: expected a trial config .* got a string", None, ()),
    ("empty space", ["run", "empty.yaml"], 2, r"empty\.yaml: empty file \(expected a search space", None, ()),
    ("space is a list", ["run", "list.yaml"], 2, r"list\.yaml: expected a search space .* got a list", None, ()),
    ("empty base config", ["run", "empty_base_space.yaml"], 2, r"empty\.yaml: empty file \(expected a trial config",
     None, ()),
]


def tree(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.mark.parametrize("label,argv,code,message,setup,may_create", BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_fails_in_one_line_and_creates_nothing(tmp_path, monkeypatch, capsys, label, argv, code, message,
                                                          setup, may_create):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    input_files(cwd)
    port = closed_port()
    if setup:
        setup(cwd, port)
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = tree(tmp_path)
    assert main([part.format(port=port, cwd=cwd) for part in argv]) == code
    out, err = capsys.readouterr()
    line = one_error_line(err)
    assert re.search(message, line), line
    assert "secret" not in out + err
    assert tree(tmp_path) - before <= {str(Path("cwd", path)) for path in may_create}


@pytest.mark.parametrize("uri,shown", [
    ("http://user:secret@host:5000", "http://user:***@host:5000"),
    ("https://user:secret@host/path?x=1", "https://user:***@host/path?x=1"),
    ("postgresql+psycopg2://user:se@cr:et@db.example:5432/optuna",
     "postgresql+psycopg2://user:***@db.example:5432/optuna"),
    ("mysql://db.example/optuna?user=me&password=secret", "mysql://db.example/optuna?user=me&password=***"),
    ("cannot reach 'http://user:secret@host' (and http://other:secret@h2/x)",
     "cannot reach 'http://user:***@host' (and http://other:***@h2/x)"),
    ("sqlite:////tmp/mlruns.db", "sqlite:////tmp/mlruns.db"),
    ("http://host:5000/api", "http://host:5000/api"),
    ("postgresql://user@host/db", "postgresql://user@host/db"),
])
def test_redact_hides_passwords_and_keeps_the_rest(uri, shown):
    from study.track.tracking import redact

    assert redact(uri) == shown
    assert redact(redact(uri)) == shown


def test_an_unreachable_store_error_shows_no_password():
    from study.track.tracking import TrackingError, check_tracking

    with pytest.raises(TrackingError) as raised:
        check_tracking(f"http://user:secret@127.0.0.1:{closed_port()}", timeout=2)
    assert "secret" not in str(raised.value) and "http://user:***@127.0.0.1" in str(raised.value)


def test_console_errors_redact_whatever_quotes_a_uri(capsys):
    from study.console import console

    console.error("RestException: POST http://user:secret@host/api/2.0/runs failed")
    assert capsys.readouterr().err == "kd-study: error: RestException: POST http://user:***@host/api/2.0/runs failed\n"


def test_study_state_keeps_the_real_uri_readable_by_its_owner_only(tmp_path):
    from study.paths import StudyPaths

    paths = StudyPaths.of("s", tmp_path)
    paths.update_state(tracking_uri="http://user:secret@host", optuna_storage="postgresql://u:secret@db/o")
    paths.update_state(status="running")
    assert stat.S_IMODE(paths.state.stat().st_mode) == 0o600
    assert paths.read_state()["tracking_uri"] == "http://user:secret@host"   # resume needs it
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "my study", "-flag", "x\ny", "trailing\n"])
def test_the_name_rule_refuses_what_is_not_one_folder_name(name):
    from study.paths import StudyPaths
    from trainables.config import ConfigError, TrialConfig, check_name

    with pytest.raises(ConfigError, match="study name"):
        check_name(name, "study name")
    with pytest.raises(ConfigError):
        StudyPaths.of(name)
    with pytest.raises(ConfigError, match=r"<config>: name: expected letters"):
        TrialConfig.from_dict({"name": name})


@pytest.mark.parametrize("name", ["quickstart", "wkl_paper", "tiny-tpe", "v1.2", "t-3f2a1_00001", "A"])
def test_the_name_rule_keeps_ordinary_names(name):
    from trainables.config import TrialConfig, check_name

    assert check_name(name, "study name") == name
    assert TrialConfig.from_dict({"name": name}).name == name


# ---- SIGTERM is Ctrl-C (issue #17) ------------------------------------------------------------------------
def sigterm_self(*args, **kwargs):
    """What a cluster scheduler does to the driver, mid-command."""
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
    raise AssertionError("SIGTERM did not stop the command")


def test_sigterm_during_train_says_how_to_continue_and_exits_143(tmp_path, monkeypatch, capsys):
    import study.run.single

    monkeypatch.setattr(study.run.single, "train_single", sigterm_self)
    config = tmp_path / "trial.yaml"
    config.write_text("name: t\noutput_dir: runs\n")
    (tmp_path / "runs" / "again").mkdir(parents=True)          # the run had started: its folder exists
    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["train", str(config), "--name", "again"]) == 143
    line = one_error_line(capsys.readouterr().err)
    assert line == (f"kd-study: error: training again stopped by SIGTERM; run `kd-study train {config} --name again` "
                    f"again to continue from its last checkpoint in {tmp_path / 'runs' / 'again'}")
    assert signal.getsignal(signal.SIGTERM) is before          # the CLI's handler does not outlive it


def test_ctrl_c_during_train_exits_130(tmp_path, monkeypatch, capsys):
    import study.run.single

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study.run.single, "train_single", interrupt)
    config = tmp_path / "trial.yaml"
    config.write_text("name: t\n")
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(config)]) == 130
    assert one_error_line(capsys.readouterr().err) == (
        f"kd-study: error: training t interrupted; run `kd-study train {config}` again to start it (it had not "
        "started training)")


def test_sigterm_before_the_study_runs_exits_143(tmp_path, monkeypatch, capsys):
    import study.run.runner

    monkeypatch.setattr(study.run.runner, "run_study", sigterm_self)
    assert main(["--root", str(tmp_path / "studies"), "run", str(space_file(tmp_path))]) == 143
    assert one_error_line(capsys.readouterr().err) == "kd-study: error: stopped by SIGTERM"


def test_sigterm_during_tunes_fit_is_its_graceful_stop(tmp_path, monkeypatch, capsys):
    """During `fit` Tune's SIGINT handler is in place: SIGTERM runs it, and the study ends 'interrupted'."""
    import study.run.runner

    stopped = []

    def run_study(space, opts):
        signal.signal(signal.SIGINT, lambda signum, frame: stopped.append(signum))   # Tune's, in fit
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        return study.run.runner.StudyOutcome(space.name, tmp_path, 3, finished=["t1"], unfinished=["t2"])

    monkeypatch.setattr(study.run.runner, "run_study", run_study)
    assert main(["run", str(space_file(tmp_path))]) == 143
    assert stopped == [signal.SIGINT]
    line = one_error_line(capsys.readouterr().err)
    assert line.endswith("study cli-test stopped by SIGTERM with 1 of 3 trials done; continue it with "
                         "`kd-study resume cli-test`")


def test_version_and_each_verb_shows_only_the_options_it_uses(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    lines = capsys.readouterr().out.splitlines()   # then faiss, CUDA and the libraries (tests/test_install.py)
    assert exited.value.code == 0 and lines[0] == f"kd-study {version('kd-study')}" and len(lines) == 4
    for verb, uses_ray in (("run", True), ("resume", True), ("train", True), ("report", False), ("export", False),
                           ("confirm", True)):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        text = capsys.readouterr().out
        assert ("--ray-address" in text) == uses_ray and ("--num-cpus" in text) == uses_ray, verb
        assert "--tracking-uri" in text and "--root" in text
        positional = text.split("positional arguments:")[1].split("options:")[0]
        assert all(len(line.split()) > 1 for line in positional.strip().splitlines()), f"{verb}: a positional without help"


def test_multi_objective_uses_the_spaces_own_metric_keys(tmp_path, capsys):
    """The SciFact spaces evaluate on subsets: --multi-objective must optimise the `_subset500` keys."""
    code = main(["--root", str(tmp_path), "run", str(SPACES / "scifact_sampling.yaml"), "--multi-objective", "--dry-run"]) \
        if (SPACES.parent.parent / "shared" / "data" / "scifact").is_dir() else None
    from study.cli.verbs import _headline_objectives
    from study.space.schema import load_space

    objectives = _headline_objectives(load_space(SPACES / "scifact_sampling.yaml"))["study.objectives"]
    assert [o["metric"] for o in objectives] == ["dev_mrr_at_10_subset500", "beir_ndcg_at_10_avg_subset500"]
    if code is not None:
        assert code == 0 and "dev_mrr_at_10_subset500, beir_ndcg_at_10_avg_subset500 (max, max)" in capsys.readouterr().out
    no_beir = space_file(tmp_path)
    raw = yaml.safe_load(no_beir.read_text())
    raw["base"]["eval"] = {"beir": []}
    no_beir.write_text(yaml.safe_dump(raw))
    assert main(["--root", str(tmp_path), "run", str(no_beir), "--multi-objective", "--dry-run"]) == 2
    assert "do not report beir_ndcg_at_10_avg" in one_error_line(capsys.readouterr().err)


# ---- a console a person reads (issue #12): the libraries' lines in logs/, --verbose brings them back -------
def test_run_says_where_the_logs_are_and_verbose_keeps_them_here(tmp_path, monkeypatch, capsys):
    import study.run.runner

    handed = []

    def run_study(space, opts):
        from study.console import logs

        handed.append((opts.verbose, logs.active()))
        return study.run.runner.StudyOutcome(space.name, tmp_path / "studies" / space.name, 1, finished=["t1"])

    monkeypatch.setattr(study.run.runner, "run_study", run_study)
    monkeypatch.chdir(tmp_path)
    space = str(space_file(tmp_path))
    assert main(["--root", "studies", "run", space]) == 0
    assert "kd-study: logs: studies/cli-test/logs/ (" in capsys.readouterr().out
    assert main(["--root", "studies", "run", space, "--verbose"]) == 0
    assert "logs:" not in capsys.readouterr().out
    (default, routing), (verbose, none) = handed
    assert default == 1 and routing.driver_log == tmp_path / "studies" / "cli-test" / "logs" / "driver.log"
    assert verbose == 2 and none is None
    with pytest.raises(SystemExit) as exit_:
        main(["run", space, "--verbose", "--quiet"])             # one or the other
    assert exit_.value.code == 2


@pytest.mark.parametrize("error,says", [
    (ValueError("negative dimensions are not allowed"),
     "internal error: negative dimensions are not allowed (a bug in kd-study: the traceback is in "
     "studies/cli-test/logs/driver.log)"),
    ("cannot start or join a local Ray: out of memory",      # a Failure (StudyError)
     "cannot start or join a local Ray: out of memory (traceback: studies/cli-test/logs/driver.log)"),
], ids=["a bug", "a failure"])
def test_a_failure_prints_one_line_and_leaves_its_traceback_in_the_log(tmp_path, monkeypatch, capsys, error, says):
    import study.run.runner
    from study.run.preflight import StudyError

    error = StudyError(error) if isinstance(error, str) else error

    def run_study(space, opts):
        (tmp_path / "studies" / space.name).mkdir(parents=True)   # the study had started
        raise error

    monkeypatch.setattr(study.run.runner, "run_study", run_study)
    monkeypatch.chdir(tmp_path)
    assert main(["--root", "studies", "run", str(space_file(tmp_path))]) == 1
    assert one_error_line(capsys.readouterr().err) == f"kd-study: error: {says}"
    logged = (tmp_path / "studies" / "cli-test" / "logs" / "driver.log").read_text()
    assert "Traceback (most recent call last)" in logged and str(error) in logged
