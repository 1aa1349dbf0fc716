"""How one dotted TrialConfig field is searched: its spec, its grid values, and its Optuna suggestion.

A spec is `{type, low, high, step}` for a range (float, int, loguniform) or `{type: categorical,
choices}`, plus an optional `when: {field: value(s)}` condition (see study/space/schema.py). It is checked
for its own shape here; whether its values give a valid trial config is checked in
study/space/checks.py.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = bool | int | float | str | None


class Strict(BaseModel):
    """A space file section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)   # .inf/.nan: refused at load


class ParamSpec(Strict):
    """How one dotted TrialConfig field is searched."""

    type: Literal["float", "int", "loguniform", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = Field(None, gt=0)
    choices: list[Scalar] | None = None
    when: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> "ParamSpec":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty `choices` list")
            if self.low is not None or self.high is not None or self.step is not None:
                raise ValueError("categorical takes `choices`, not low/high/step")
            if len({json.dumps(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"choices repeat a value: {self.choices}")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low/high (and step), not `choices`")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs both `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"low={self.low} is above high={self.high}")
        if self.type == "loguniform":
            if self.low <= 0:
                raise ValueError(f"loguniform needs low > 0, got {self.low}")
            if self.step is not None:
                raise ValueError("loguniform takes no `step`")
        if self.type == "int":
            for name in ("low", "high", "step"):
                value = getattr(self, name)
                if value is not None and value != int(value):
                    raise ValueError(f"int needs a whole `{name}`, got {value}")
        return self

    def condition(self) -> dict[str, list[Scalar]]:
        """`when` with every value as a list of allowed values."""
        return {k: (v if isinstance(v, list) else [v]) for k, v in self.when.items()}

    def extremes(self) -> list[Scalar]:
        """The values validated before a study starts: every choice, or both ends of the range."""
        if self.type == "categorical":
            return list(self.choices)
        return [self._typed(self.low), self._typed(self.high)]

    def grid_values(self) -> list[Scalar] | None:
        """Every value of a categorical or stepped range; None when the range is continuous."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 10) for i in range(count)]

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return any(value == c and type(value) is type(c) or same_number(value, c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low - 1e-12 <= value <= self.high + 1e-12:
            return False
        if self.type == "int" and value != int(value):
            return False
        if self.step is not None:
            ratio = (value - self.low) / self.step
            return abs(ratio - round(ratio)) < 1e-8
        return True

    def suggest(self, trial: Any, name: str) -> Any:
        """Declare this parameter on an Optuna trial (define-by-run) and return its value."""
        if self.type == "categorical":
            return trial.suggest_categorical(name, self.choices)
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1))
        if self.type == "loguniform":
            return trial.suggest_float(name, self.low, self.high, log=True)
        return trial.suggest_float(name, self.low, self.high, step=self.step)

    def describe(self) -> str:
        """`choices [...]` or `float [low, high] step s`, for error messages."""
        if self.type == "categorical":
            return f"choices {self.choices}"
        return f"{self.type} [{self.low}, {self.high}]" + (f" step {self.step}" if self.step else "")

    def _typed(self, value: float) -> int | float:
        return int(value) if self.type == "int" else float(value)


def same_number(a: Any, b: Any) -> bool:
    """2 == 2.0 for a condition or a choice, but True is not 1."""
    numbers = (int, float)
    return (isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool)
            and not isinstance(b, bool) and a == b)


def holds(value: Any, allowed: list[Scalar]) -> bool:
    """Whether a field's value is one of a condition's allowed values."""
    return any(value == a or same_number(value, a) for a in allowed)


@dataclass(frozen=True)
class SearchParam:
    name: str
    spec: ParamSpec
