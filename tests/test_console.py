"""The live view of a study (study.console.console.StudyView): a line per trial event, plain in a pipe or a log file."""
from __future__ import annotations

import pickle

from study.console.console import Counts, StudyView, duration, params_text


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def view(clock: Clock, live: bool = True) -> StudyView:
    return StudyView("qs", 4, ["dev_mrr_at_10"], ["max"], live=live, clock=clock)


def test_a_finished_trial_says_its_values_metric_time_best_counts_and_eta(capsys):
    clock = Clock()
    v = view(clock)
    v.started("a1", {"loss.name": "wkl", "loss.gamma1": 2.0, "sampler.k": 8})
    clock.now += 65
    v.finished("a1", {"loss.name": "wkl", "loss.gamma1": 2.0, "sampler.k": 8}, {"dev_mrr_at_10": 0.41234},
               Counts(finished=1))
    v.started("b2", {"loss.name": "kl", "sampler.k": 4})
    clock.now += 55
    v.finished("b2", {"loss.name": "kl", "sampler.k": 4}, {"dev_mrr_at_10": 0.3}, Counts(finished=2))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "kd-study: trial a1 started   γ1=2 loss=wkl K=8"
    assert lines[1] == "kd-study: trial a1 finished  dev_mrr_at_10 0.4123  in 1m05s  γ1=2 loss=wkl K=8"
    assert lines[2] == ("  study qs: 1/4 done, 0 running, 0 failed; best dev_mrr_at_10 0.4123 (a1); 1m05s, "
                        "ETA 3m15s")
    # two trials in 2 minutes, two left: 2 minutes; the best stays the higher one (mode max)
    assert lines[-1] == "  study qs: 2/4 done, 0 running, 0 failed; best dev_mrr_at_10 0.4123 (a1); 2m00s, ETA 2m00s"


def test_failed_and_stopped_trials_are_counted_and_a_pipe_gets_no_control_codes(capsys):
    clock = Clock()
    v = view(clock)
    v.tick(Counts(running=1))                        # stdout is not a terminal here: no status line
    v.started("a1", {"loss.name": "kl"})
    clock.now += 10
    v.failed("a1", "Diverged: diverged at step 3: loss is nan", Counts(failed=1))
    v.stopped_early("b2", {"loss.name": "kl"}, {"dev_mrr_at_10": 0.1, "time_total_s": 30.0},
                    Counts(failed=1, stopped=1))
    v.close()
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    assert "kd-study: trial a1 failed: Diverged: diverged at step 3: loss is nan" in out
    assert "kd-study: trial b2 stopped early (dev_mrr_at_10 so far 0.1)  in 30s  loss=kl" in out
    assert out.splitlines()[-1] == "  study qs: 0/4 done, 1 stopped early, 0 running, 1 failed; 10s, ETA 10s"


def test_the_view_survives_tunes_pickling():
    """Tune pickles its callbacks into the study's tune/ folder: the view holds no stream and no clock."""
    clock = Clock()
    v = view(clock)
    v.best = (0.5, "a1")
    again = pickle.loads(pickle.dumps(v))
    assert again.best == (0.5, "a1") and isinstance(again.clock(), float)


def test_durations_and_short_names():
    assert [duration(s) for s in (4.4, 65, 3600 + 120)] == ["4s", "1m05s", "1h02m"]
    assert params_text({"optim.lr": 1e-4, "sampler.name": "topk"}) == "lr=0.0001 sampler=topk"


def test_on_a_terminal_one_status_line_is_redrawn_in_place_at_most_once_a_second(monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    clock = Clock()
    v = view(clock)
    v.started("a1", {"loss.name": "kl"})
    v.tick(Counts(running=1))
    clock.now += 0.5
    v.tick(Counts(running=1))                        # too soon: not redrawn
    clock.now += 1
    v.tick(Counts(running=1))
    assert terminal.getvalue().count("\r\x1b[K") == 2
    v.failed("a1", "boom", Counts(failed=1))         # the status line is cleared before the event line
    v.close()
    text = terminal.getvalue()
    assert "\r\x1b[Kkd-study: trial a1 failed: boom" in text
    assert text.endswith("\n") and "study qs: 0/4 done, 1 running, 0 failed; 2s" in text


def test_quiet_draws_no_status_line_even_on_a_terminal(monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    v = view(Clock(), live=False)
    v.tick(Counts(running=1))
    assert sys.stdout.getvalue() == ""


def test_a_view_pickled_before_progress_lines_existed_unpickles_with_them():
    """A study started by an older kd-study pickled its view without `progress`; `resume` must still load it."""
    state = pickle.loads(pickle.dumps(view(Clock()))).__dict__.copy()
    del state["progress"]
    old = StudyView.__new__(StudyView)
    old.__setstate__(state)
    assert old.progress.clock is old.clock
