"""Trainables: data, teacher, samplers, losses, student, the Ray Train loop and evaluation.

Nothing here imports `study`; a trial receives everything through its config and asset paths.
"""
from trainables.moved import MODULES as _MODULES, install as _install

_install(_MODULES)
