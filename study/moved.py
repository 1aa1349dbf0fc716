"""Old module paths of `study`, still importable for the pickles in a study's `tune/` folder.

A study started before study/ got its rooms (space/, run/, track/, report/, check/, console/, cli/) pickled
its trainable, searcher and callbacks under the flat paths (`study.run.search.StudySearch`); `resume`
unpickles them through these maps (the mechanism: `trainables.moved`).
"""
from __future__ import annotations

MODULES: dict[str, str] = {
    "study.params": "study.space.params",
    "study.grid": "study.space.grid",
    "study.space_checks": "study.space.checks",
    "study.contrasts": "study.space.contrasts",
    "study.replicates": "study.space.replicates",
    "study.runner": "study.run.runner",
    "study.tuner": "study.run.tuner",
    "study.search": "study.run.search",
    "study.trainable": "study.run.trainable",
    "study.ray_session": "study.run.ray_session",
    "study.shared_assets": "study.run.assets",
    "study.confirm": "study.run.confirm",
    "study.outcome": "study.run.outcome",
    "study.preflight": "study.run.preflight",
    "study.tracking": "study.track.tracking",
    "study.tags": "study.track.tags",
    "study.dataset_inputs": "study.track.dataset_inputs",
    "study.model_registry": "study.track.model_registry",
    "study.trial_runs": "study.track.trial_runs",
    "study.document": "study.report.document",
    "study.export": "study.report.export",
    "study.check_scores": "study.check.scores",
    "study.arguments": "study.cli.arguments",
    "study.logs": "study.console.logs",
}
PACKAGES: dict[str, str] = {
    "study.space": "study.space.schema",
    "study.check": "study.check.dimensions",
    "study.cli": "study.cli.verbs",
    "study.console": "study.console.console",
}
# a module that still exists -> names that moved out of it -> where they live now. Tune pickled them by
# the old module's path (the Tuner, the searcher state): a study started before they moved resumes
# through these (study/run/runner.py's `__getattr__`).
NAMES: dict[str, dict[str, str]] = {
    "study.run.runner": {"StudySearch": "study.run.search", "StudyLimiter": "study.run.search",
                         "TrialLines": "study.run.tuner", "trial_dirname": "study.run.tuner",
                         "distil_trial": "study.run.trainable"},
}
