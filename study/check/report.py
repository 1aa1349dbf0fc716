"""What `kd-study check` returns: one `DimensionResult` per dimension in a `CheckReport`, and its levels.

Apart from the derivations so its readers (the console's table, `run`'s stop on errors) need not
know how a value was derived. Levels: `error` stops a run (`raise_on_errors`), `warning` is printed.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from trainables.config import ConfigError
from trainables.registry import Derived
from trainables.train.loss_checks import number

from study.check.evidence import Evidence
from study.space.params import Scalar

LEVELS = ("ok", "warning", "error")


@dataclass
class DimensionResult:
    dimension: str
    reads: tuple[str, ...] = ()
    results: list[tuple[dict[str, Scalar], Derived]] = field(default_factory=list)

    @property
    def level(self) -> str:
        return max((d.level for _, d in self.results), key=LEVELS.index, default="ok")

    def worst(self) -> tuple[dict[str, Scalar], Derived] | None:
        flagged = [r for r in self.results if r[1].level == self.level]
        return flagged[0] if flagged else None

    def describe(self, point: Mapping[str, Scalar]) -> str:
        """The searched values of `point` this dimension reads (`k=v, ...`), or "every trial"."""
        read = [f"{k}={v}" for k, v in point.items()
                if any(k == r or k.startswith(r + ".") for r in self.reads)]
        return ", ".join(read) or "every trial"

    def value_range(self) -> str:
        values = [d.value for _, d in self.results if d.value is not None and math.isfinite(d.value)]
        if not values:
            texts = list(dict.fromkeys(d.text for _, d in self.results))
            return ", ".join(texts[:3]) + (" …" if len(texts) > 3 else "")
        low, high = min(values), max(values)
        return number(low) if low == high else f"{number(low)} … {number(high)}"


@dataclass
class CheckReport:
    source: str
    n_points: int
    points_note: str
    evidence: Evidence
    dimensions: list[DimensionResult]

    @property
    def errors(self) -> list[DimensionResult]:
        return [d for d in self.dimensions if d.level == "error"]

    @property
    def warnings(self) -> list[DimensionResult]:
        return [d for d in self.dimensions if d.level == "warning"]

    def flag_lines(self) -> list[str]:
        """One line per flagged dimension: level, dimension, why, and the first point it holds at."""
        lines = []
        for dim in self.errors + self.warnings:
            point, derived = dim.worst()
            count = sum(1 for _, d in dim.results if d.level == dim.level)
            at = dim.describe(point)
            lines.append(f"{dim.level}: {dim.dimension}: {derived.why} ({count} of {len(dim.results)} trials; "
                         f"e.g. {at})")
        return lines


def raise_on_errors(report: CheckReport) -> None:
    """A check with errors is bad input (ConfigError, exit 2): one line naming the file and the first error."""
    if report.errors:
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise ConfigError(f"{report.source}: check: {report.flag_lines()[0].removeprefix('error: ')}{more}")
