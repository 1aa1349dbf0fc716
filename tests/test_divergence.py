"""Divergence without Ray: a non-finite loss or gradient stops the step before the weights change,
the test hook that makes a study's trial diverge, and best-trial choices that never pick NaN.

The study end to end (the diverged trial FAILED in MLflow and Optuna, never best or exported) is
`tests/test_study.py::test_a_diverging_trial_fails_everywhere_and_is_never_best` (slow).
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from trainables.config import TrialConfig, loss_config as LossConfig
from trainables.errors import Diverged, Failure
from trainables.train.step import StepInputs, train_step


class Scorer(nn.Module):
    """Scores [b, n] = the queries' features · w (or · √w, whose gradient at w = 0 is infinite)."""

    def __init__(self, w: list[float], sqrt: bool = False):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.sqrt = sqrt

    def forward(self, queries, passages, n: int):
        return queries * (self.w.sqrt() if self.sqrt else self.w)


def inputs(teacher: torch.Tensor) -> StepInputs:
    b, n = teacher.shape
    positives = torch.zeros(b, n, dtype=torch.bool)
    positives[:, 0] = True
    return StepInputs(queries=torch.ones(b, n), passages=None, n=n, teacher_scores=teacher,
                      positive_mask=positives, valid_mask=torch.ones(b, n, dtype=torch.bool), student_ranks=None,
                      sampled_teacher_scores=[], loss_weight=1.0)


def run_step(model: nn.Module, teacher: torch.Tensor, completed: int = 2) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return train_step(model, optimizer, scheduler, inputs(teacher), LossConfig(name="kl"), completed, 1.0,
                      torch.device("cpu"))


def test_a_nan_loss_stops_the_step_before_the_weights_change():
    model = Scorer([0.5, 1.0, 2.0])
    with pytest.raises(Diverged, match=r"^diverged at step 3: loss is nan$"):
        run_step(model, torch.full((2, 3), float("nan")), completed=2)
    assert torch.equal(model.w.detach(), torch.tensor([0.5, 1.0, 2.0]))
    assert isinstance(Diverged("x"), Failure)      # exit 1 in the CLI: valid input, failed work


def test_a_non_finite_gradient_stops_the_step_even_when_the_loss_is_finite():
    model = Scorer([0.0, 1.0, 4.0], sqrt=True)      # d√w/dw = ∞ at w = 0
    with pytest.raises(Diverged, match=r"^diverged at step 1: gradient norm is (inf|nan)$"):
        run_step(model, torch.tensor([[1.0, 0.0, -1.0]]), completed=0)
    assert torch.equal(model.w.detach(), torch.tensor([0.0, 1.0, 4.0]))


def test_a_finite_step_trains():
    model = Scorer([0.5, 1.0, 2.0])
    loss = run_step(model, torch.tensor([[3.0, 0.0, -3.0]]))
    assert math.isfinite(loss) and not torch.equal(model.w.detach(), torch.tensor([0.5, 1.0, 2.0]))


def test_train_hooks_reach_only_the_trials_they_name():
    """A test's faults are one explicit object (trainables/train/hooks.py); `only` picks the trials."""
    from trainables.train.hooks import TrainHooks

    kl = TrialConfig.from_dict({"loss": {"name": "kl"}}, source="test")
    wkl = TrialConfig.from_dict({"loss": {"name": "wkl"}}, source="test")
    every = TrainHooks(nan_loss_at_step=3)
    assert every.for_trial(kl) is every and every.for_trial(wkl) is every
    only_wkl = TrainHooks(nan_loss_at_step=3, only={"loss.name": "wkl"})
    assert only_wkl.for_trial(kl) is None and only_wkl.for_trial(wkl) is only_wkl
    assert TrainHooks(only={"loss.gamma1": 0.0}).for_trial(kl) is None       # a setting KL does not have
    assert only_wkl.nan_loss(3) and not only_wkl.nan_loss(2)


def test_a_fail_once_hook_raises_once_then_lets_the_retry_pass(tmp_path):
    from trainables.train.hooks import TrainHooks

    hooks = TrainHooks(fail_once_at_step=2, fail_marker=str(tmp_path / "fired"))
    hooks.before_step(1, rank=0, world=1)                         # not its step
    with pytest.raises(RuntimeError, match="fault injected before step 2"):
        hooks.before_step(2, rank=0, world=1)
    hooks.before_step(2, rank=0, world=1)                         # the retry passes


def test_the_study_outcome_never_picks_a_non_finite_or_failed_trial(tmp_path, monkeypatch):
    """`collect_outcome` chooses with `best_position`, the rule of the report and the export."""
    import yaml

    from study import compat
    from study.run.outcome import collect_outcome
    from study.paths import StudyPaths
    from study.report.best import best_position
    from study.space.schema import load_space
    from study.track.tracking import FINAL_METRIC_MARKER

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({
        "base": {"data": {"pool_depth": 10}, "sampler": {"k": 4}},
        "search": {"optim.lr": {"type": "categorical", "choices": [1e-5, 1e-4, 1e-3, 1e-2]}},
        "study": {"name": "nan", "algorithm": "grid", "metric": "dev_mrr_at_10", "mode": "max"}}))
    space = load_space(path)

    def trial(trial_id: str, status: str, value: float) -> SimpleNamespace:
        return SimpleNamespace(trial_id=trial_id, status=status, config={}, error_file=None, error_msg="diverged",
                               last_result={"dev_mrr_at_10": value, FINAL_METRIC_MARKER: 0.1})

    trials = [trial("nan", "TERMINATED", float("nan")), trial("failed", "ERROR", 0.9),
              trial("inf", "TERMINATED", math.inf), trial("good", "TERMINATED", 0.3)]
    monkeypatch.setattr(compat, "result_grid_trials", lambda grid: trials)
    outcome = collect_outcome(space, StudyPaths.of("nan", tmp_path), object(), f"sqlite:///{tmp_path / 'o.db'}")
    assert outcome.best["trial_id"] == "good"
    assert [t for t, _ in outcome.errored] == ["failed"]

    assert best_position([float("nan"), None, "x", 0.2, -math.inf, 0.2], "max") == 3    # ties: the first
    assert best_position([0.5, -math.inf, 0.1], "min") == 2
    assert best_position([float("nan"), math.inf], "max") is None
