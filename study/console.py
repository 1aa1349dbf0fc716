"""What `kd-study` prints: a study's plan, its trials table and outcome, a trial's final metrics, one-line errors.

Tables go to stdout (rich; a pipe or a log file gets them unsqueezed), errors to stderr as one line
`kd-study: error: ...`. Light to import: rich loads when a table is printed.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from trainables.outputs import BEIR_NDCG_AT_10_AVG, DEV_MRR_AT_10

if TYPE_CHECKING:
    from study.check import CheckReport
    from study.runner import StudyOutcome
    from study.space import SearchSpace

PROG = "kd-study"
SHORT_NAMES = {"loss.gamma1": "γ1", "loss.alpha": "α", "loss.name": "loss", "sampler.name": "sampler",
               "sampler.k": "K", "optim.lr": "lr", "optim.batch_size": "batch"}
HEADLINE_LABELS = ((DEV_MRR_AT_10, "Dev MRR@10"), (BEIR_NDCG_AT_10_AVG, "BEIR nDCG@10 (avg)"))


def print_plan(space: SearchSpace) -> None:
    """`run --dry-run`: the study settings, searched and fixed fields, and the points evaluated first."""
    study = space.study
    print(f"study {space.name}: {study.algorithm}, {space.num_samples} trials, "
          f"{study.max_concurrent_trials} at a time, metric {', '.join(space.metrics)} "
          f"({', '.join(space.modes)}), scheduler {study.scheduler}, seed {study.seed}")
    for param in space.params:
        spec = param.spec.model_dump(exclude_none=True, exclude_defaults=True)
        print(f"  search {param.name}: {spec}")
    for key, value in space.fixed.items():
        print(f"  fixed  {key} = {value!r}")
    points = space.initial_points()
    if points:
        label = "grid points" if study.algorithm == "grid" else "points to evaluate first"
        print(f"  {len(points)} {label}:")
        for point in points:
            print("    " + ", ".join(f"{k}={v}" for k, v in point.items()))


def print_check(report: CheckReport) -> None:
    """`kd-study check`: one row per dimension (its range over the checked trials, its flag), then the flags."""
    ev = report.evidence
    print(f"check {report.source}: {report.n_points} trials ({report.points_note})")
    print(f"  training queries: {ev.n_queries_source}")
    print(f"  scores: {ev.scores_note}")
    marks = {"ok": "ok", "warning": "WARNING", "error": "ERROR"}
    rows = []
    for dim in report.dimensions:
        point, example = dim.worst()
        rows.append([dim.dimension, dim.value_range(), marks[dim.level], example.text, dim.describe(point)])
    table("what the trials would do", ["dimension", "range over the trials", "flag", "the worst trial does",
                                       "at"], rows, wrap=True)
    for line in report.flag_lines():
        print(line)
    print(f"{len(report.errors)} errors, {len(report.warnings)} warnings")


def print_outcome(outcome: StudyOutcome, metrics: list[str]) -> None:
    """The trials table (searched params, then `metrics`), the best trial or Pareto front, and the files written."""
    if outcome.rows:
        params = sorted({k for row in outcome.rows for k in row} - {"trial_id", "status", *metrics})
        rows = []
        for row in outcome.rows:
            rows.append([row["trial_id"], row["status"], *[_fmt(row.get(p)) for p in params],
                         *[_fmt(row.get(m)) for m in metrics]])
        headers = [SHORT_NAMES.get(p, p) for p in params]
        table(f"study {outcome.name}", ["trial", "status", *headers, *metrics], rows)
    if outcome.best:
        print(f"best trial: {outcome.best['trial_id']} ({metrics[0]} = {outcome.best[metrics[0]]:.4f})")
    if outcome.pareto:
        print(f"Pareto front ({', '.join(metrics)}): {', '.join(outcome.pareto)}")
    if outcome.report_path:
        print(f"report: {outcome.report_path}")
    if outcome.best_config_path:
        print(f"best config: {outcome.best_config_path}  (kd-study train {outcome.best_config_path})")
    print(f"study folder: {outcome.dir}")


def print_trial_result(name: str, result: Any) -> None:
    """`kd-study train`: the final metrics of one trial (a trainables.trial.TrialResult) and where it saved."""
    table(f"{name}: final metrics", ["metric", "value"], metric_rows(result.metrics))
    if result.checkpoint_path:
        print(f"checkpoint: {result.checkpoint_path}")
    if result.student_dir:
        print(f"student:    {result.student_dir}")


def metric_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """Dev MRR@10, BEIR nDCG@10 (average, then per dataset), then other nDCG@10 sets (TREC DL)."""
    rows = []
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for prefix, label in HEADLINE_LABELS:
        for key in sorted(k for k in numbers if k.startswith(prefix)):
            rows.append([label + key[len(prefix):].replace("_", " "), f"{numbers[key]:.4f}"])
    for measure, label in (("ndcg_at_10", "nDCG@10"), ("mrr_at_10", "RR@10")):
        for key in sorted(k for k in numbers if k.startswith("beir/") and f"/{measure}" in k):
            rows.append([f"  BEIR {key.split('/')[1]} {label}" + key.split(measure)[1].replace("_", " "),
                         f"{numbers[key]:.4f}"])
    for key in sorted(k for k in numbers if "_ndcg_at_10" in k and not k.startswith(("dev_", "beir"))):
        rows.append([key.replace("_ndcg_at_10", " nDCG@10").replace("_", " "), f"{numbers[key]:.4f}"])
    return rows


def table(title: str, columns: list[str], rows: list[list[str]], wrap: bool = False) -> None:
    """A rich table on stdout; `wrap` lets long cells wrap instead of squeezing other columns out."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency
        print(title)
        for row in rows:
            print("  " + "  ".join(row))
        return
    rich_table = Table(title=title)
    for column in columns:
        rich_table.add_column(column, no_wrap=not wrap, overflow="fold" if wrap else "ellipsis")
    for row in rows:
        rich_table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # a pipe or a log file: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 200))
    console.print(rich_table)


def error(message: str) -> None:
    """`kd-study: error: ...` on stderr, on one line whatever the message held, passwords in URIs redacted.

    Redacted here too, not only where kd-study names a URI: a library's own message may quote one.
    """
    from study.tracking import redact

    one_line = " ".join(redact(str(message)).split())
    print(f"{PROG}: error: {one_line}", file=sys.stderr, flush=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
