"""What a batch log shows: plain progress lines for asset building and each running trial, at most one per interval."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from study.console.console import StudyView
from study.console.progress import TrialProgress, follow_train_log
from trainables.outputs import FINAL_LOSS, QUERIES_PER_SECOND, TRAIN_LOSS
from trainables.progress import PROGRESS_INTERVAL_ENV, PlainProgress, progress_bar, progress_interval

PROGRESS_LINE = re.compile(r"kd-study: trial (\S+) step (\d+)/(\d+) \(\d+%\), loss \S+, \S+ queries/s")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_long_loop_prints_a_line_per_interval_with_rate_and_eta_then_a_closing_line():
    clock, lines = Clock(), []
    bar = PlainProgress(1000, "teacher pairs", "pair", interval=60, clock=clock, write=lines.append)
    for _ in range(10):
        clock.now += 15
        bar.update(100)      # 100 pairs every 15 s
    bar.close()
    assert lines == ["kd-study: teacher pairs 400/1,000 (40%), 6.7 pair/s, ETA 1m30s",
                     "kd-study: teacher pairs 800/1,000 (80%), 6.7 pair/s, ETA 30s",
                     "kd-study: teacher pairs 1,000/1,000 done in 2m30s, 6.7 pair/s"]


def test_a_loop_shorter_than_the_interval_prints_nothing():
    clock, lines = Clock(), []
    bar = PlainProgress(10, "encode passages", "text", interval=60, clock=clock, write=lines.append)
    clock.now += 5
    bar.update(10)
    bar.close()
    assert lines == []


def test_off_a_terminal_the_bar_is_plain_lines_and_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setattr(sys, "stderr", open(os.devnull, "w"))   # not a terminal, as in a batch job
    assert isinstance(progress_bar(5, "warm-up", "step"), PlainProgress)
    assert not isinstance(progress_bar(5, "warm-up", "step", enabled=False), PlainProgress)
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "2.5")
    assert progress_interval() == 2.5
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "soon")
    assert progress_interval() == 60.0


def report(step: int, **extra) -> dict:
    return {"step": step, TRAIN_LOSS: 0.5 / step, QUERIES_PER_SECOND: 80.0, **extra}


def test_a_running_trial_gets_at_most_one_line_per_interval_with_its_latest_evaluation_and_eta():
    clock = Clock()
    progress = TrialProgress(["dev_mrr_at_10"], interval=60, clock=clock)
    progress.started("t1", total_steps=100)
    lines = []
    for step in range(10, 101, 10):     # a report every 10 steps, 20 s apart
        clock.now += 20
        lines.append(progress.result("t1", report(step, **({"dev_mrr_at_10": 0.25} if step == 50 else {}))))
    printed = [line for line in lines if line]
    assert len(printed) == 3        # 200 s of reports, one line per 60 s
    clock.now += 60
    assert progress.result("t1", report(100, **{FINAL_LOSS: 0.005})) is None   # the trial's end line says it
    assert printed[0] == "trial t1 step 30/100 (30%), loss 0.01667, 80 queries/s, ETA 2m20s"
    assert printed[1] == "trial t1 step 60/100 (60%), loss 0.008333, 80 queries/s, dev_mrr_at_10 0.2500 at step 50, ETA 1m20s"


def test_the_train_log_of_a_run_is_followed_while_it_trains(tmp_path):
    log = tmp_path / "run" / "train_log.jsonl"
    log.parent.mkdir()
    log.write_text(json.dumps(report(1)) + "\n")     # an earlier attempt's report: not shown again
    said = []
    with follow_train_log(log, "run", TrialProgress([], interval=0), 8, said.append, poll_s=0.05):
        for step in (2, 4):
            with open(log, "a") as handle:
                handle.write(json.dumps(report(step)) + "\n")
            time.sleep(0.3)
    assert [int(PROGRESS_LINE.match(line).group(2)) for line in said] == [2, 4]


def test_the_study_view_prints_progress_lines_in_a_log_only_in_the_default_mode(capsys):
    for live, expected in ((True, 1), (False, 0)):    # --quiet: events only
        view = StudyView("s", 2, ["dev_mrr_at_10"], ["max"], live=live, clock=Clock())
        view.progress.interval = 0
        view.started("t1", {"loss.name": "kl"}, total_steps=10)
        view.result("t1", report(5))
        assert capsys.readouterr().out.count("kd-study: trial t1 step 5/10 (50%)") == expected


# ---- the command on a pipe ------------------------------------------------------------------------
@pytest.mark.slow
def test_train_on_a_pipe_prints_periodic_progress_lines(tmp_path, sample_data):
    """`kd-study train CONFIG > log`: between "training ..." and the final table, a line per trial interval."""
    data = {"id": f"beir:{sample_data / 'scifact_ci'}", "split": "test"}
    config = tmp_path / "many-steps.yaml"
    config.write_text(yaml.safe_dump({
        "name": "many-steps",
        "data": {"train": data, "pool_depth": 8, "max_train_queries": 16},
        "teacher": {"model": "tiny:bert", "query_max_length": 16, "passage_max_length": 32},
        "student": {"model": "tiny:bert", "query_max_length": 16, "passage_max_length": 32},
        "sampler": {"name": "random", "k": 4},
        "optim": {"batch_size": 4, "max_steps": 160, "log_every_steps": 2},
        "eval": {"dev": data, "batch_size": 128, "at_fractions": [0.5, 1.0]},
        "resources": {"num_workers": 1, "cpus_per_worker": 1},
        "cache_dir": str(tmp_path / "cache"),
        "output_dir": str(tmp_path / "runs"),
    }))
    env = {**os.environ, PROGRESS_INTERVAL_ENV: "1", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300", "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray_kdp_", dir="/tmp")}
    done = subprocess.run([sys.executable, "-m", "study.cli", "train", str(config), "--num-cpus", "2"], cwd=tmp_path,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [PROGRESS_LINE.match(line) for line in done.stdout.splitlines()]
    steps = [int(m.group(2)) for m in lines if m]
    assert len(steps) >= 2, done.stdout
    assert steps == sorted(steps) and len(set(steps)) == len(steps)       # periodic, each a later step
    assert {m.group(1) for m in lines if m} == {"many-steps"} and {m.group(3) for m in lines if m} == {"160"}
    assert "\r" not in done.stdout and "\x1b[" not in done.stdout     # plain lines, no bar or control codes
