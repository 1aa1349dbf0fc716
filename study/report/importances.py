"""Optuna parameter importances of a study: which searched parameter moved the metric."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from study.track.tracking import redact


def param_importances(optuna_storage: str | os.PathLike, study_name: str) -> tuple[pd.DataFrame | None, list[str]]:
    """Optuna parameter importances of the study (fANOVA, seeded), and notes on what could not be done.

    `optuna_storage` is a storage URL or the path of an `optuna.db` sqlite file. fANOVA, not Optuna 5's
    default PED-ANOVA: PED-ANOVA contrasts the top 10% of trials with the rest, which for an 18- or
    28-point grid is two trials and gives degenerate shares (0.5 / 0.25 / 0.25).
    """
    import optuna

    notes: list[str] = []
    storage = str(optuna_storage)
    if "://" not in storage:
        if not Path(storage).is_file():
            return None, [f"no Optuna storage at {redact(storage)}: importances skipped"]
        storage = f"sqlite:///{Path(storage).resolve()}"
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return None, [f"no Optuna study named {study_name!r} in {redact(storage)}: importances skipped"]
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(completed) < 2:
        return None, [f"importances need at least 2 completed Optuna trials, the study has {len(completed)}"]
    values_by_param: dict[str, set] = {}
    for trial in completed:
        for param, value in trial.params.items():
            values_by_param.setdefault(param, set()).add(repr(value))
    constant = sorted(p for p, values in values_by_param.items() if len(values) < 2)
    varied = sorted(p for p, values in values_by_param.items() if len(values) >= 2)
    if constant:
        notes.append(f"constant in every completed trial, so no importance: {', '.join(constant)}")
    if not varied:
        return None, notes + ["no searched parameter varies over the completed trials: importances skipped"]
    target = None
    if len(study.directions) > 1:
        target = lambda t: t.values[0]  # noqa: E731 - a one-line projection
        notes.append("multi-objective study: importances for the first objective")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            importances = optuna.importance.get_param_importances(
                study, params=varied, target=target, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError) as error:
        return None, notes + [f"importances failed: {str(error).splitlines()[0]}"]
    notes.extend(f"Optuna: {str(w.message).splitlines()[0]}" for w in caught
                 if "importance" in str(w.message).lower())
    table = pd.DataFrame({"param": list(importances), "importance": [float(v) for v in importances.values()]})
    table.attrs["n_trials"] = len(completed)
    return table, notes
