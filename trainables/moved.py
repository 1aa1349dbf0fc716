"""Old module paths, still importable: the modules moved into rooms (train/, evaluate/, models/, …).

Pickles name classes and functions by module path: a study's `tune/` folder (the trainable, the
searcher, the callbacks) and its trials' state were written with the flat paths. `install` puts a
finder on `sys.meta_path` that answers an old path with the module now at the new one (the same
module object, so `isinstance` and identity hold), and `moved_attr` serves the attributes of a path
that is now a package (`trainables.evaluate.evaluation.evaluate_sets` lives in `trainables.evaluate.evaluation`).
Nothing in kd-study imports an old path; only unpicklers do.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Any, Mapping

# old module path -> where it lives now (modules whose path became a package are in PACKAGES below)
MODULES: dict[str, str] = {
    "trainables.candidates": "trainables.data.candidates",
    "trainables.training_set": "trainables.data.training_set",
    "trainables.assets": "trainables.prepare.assets",
    "trainables.train_loop": "trainables.train.loop",
    "trainables.train_step": "trainables.train.step",
    "trainables.checkpoints": "trainables.train.checkpoints",
    "trainables.epoch_plan": "trainables.train.epoch_plan",
    "trainables.ddp": "trainables.train.ddp",
    "trainables.precision": "trainables.train.precision",
    "trainables.trial": "trainables.train.trial",
    "trainables.warm_start": "trainables.train.warm_start",
    "trainables.losses.wkl_ranks": "trainables.train.rank_table",
    "trainables.retrieval": "trainables.evaluate.retrieval",
    "trainables.references": "trainables.prepare.references",
    "trainables.model_specs": "trainables.models.specs",
    "trainables.student": "trainables.models.student",
    "trainables.teacher": "trainables.models.teacher",
    "trainables.st_export": "trainables.models.st_export",
}
# old module path that is now a package -> the module that holds its old attributes
PACKAGES: dict[str, str] = {
    "trainables.evaluate": "trainables.evaluate.evaluation",
    "trainables.models": "trainables.models.encoders",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of `modules` and loads it as the module at its new path."""

    def __init__(self, modules: Mapping[str, str]):
        self.modules = dict(modules)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None   # a placeholder; exec_module replaces it in sys.modules with the real module

    def exec_module(self, module: ModuleType) -> None:
        sys.modules[module.__name__] = importlib.import_module(self.modules[module.__name__])


def install(modules: Mapping[str, str]) -> None:
    """Make every old path of `modules` importable (once per path)."""
    known = {old for finder in sys.meta_path if isinstance(finder, _Alias) for old in finder.modules}
    missing = {old: new for old, new in modules.items() if old not in known}
    if missing:
        sys.meta_path.append(_Alias(missing))


def moved_attr(package: str, name: str, packages: Mapping[str, str]) -> Any:
    """`package.name` as an old pickle means it: the attribute of the module the package's old path moved to."""
    if package in packages and not name.startswith("__"):
        module = importlib.import_module(packages[package])
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {package!r} has no attribute {name!r}")


def moved_name(module: str, name: str, names: Mapping[str, Mapping[str, str]]) -> Any:
    """`module.name` as an old pickle means it, for a name that moved out of a module that still exists."""
    if name in names.get(module, {}):
        return getattr(importlib.import_module(names[module][name]), name)
    raise AttributeError(f"module {module!r} has no attribute {name!r}")
