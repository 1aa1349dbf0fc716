"""Study orchestration: CLI, Ray Tune + Optuna, MLflow tracking, reports, best-config export.

Rooms: `space/` (what a space declares), `check/` (what its trials would do), `run/` (Ray, Tune,
Optuna, assets, confirm), `track/` (MLflow), `report/` (tables, statistics, figures, documents),
`cli/` (the `kd-study` verbs and console). The map, and what each room may import: docs/internals.md.
"""
from study import moved as _moved
from trainables.moved import install as _install

_install(_moved.MODULES)
