"""What `kd-study` prints: a study's plan, its live view, trials table and outcome, a trial's metrics, errors.

Tables and the live view go to stdout (rich; a pipe or a log file gets tables unsqueezed and plain
lines, no control codes), errors to stderr as one line `kd-study: error: ...`. The libraries' own
log lines are not printed here: study.console.logs routes them to files (`--verbose` keeps them on the
console). Light to import: rich loads when a table is printed.
"""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from trainables.outputs import BEIR_NDCG_AT_10_AVG, DEV_MRR_AT_10
from trainables.progress import duration

from study.console.progress import TrialProgress

if TYPE_CHECKING:
    from study.check.report import CheckReport
    from study.space.schema import SearchSpace

PROG = "kd-study"
# How much a command prints: --quiet (event lines only), the default (plus a status line on a
# terminal and progress bars of long steps), --verbose (plus every library's and Ray worker's log).
QUIET, NORMAL, VERBOSE = 0, 1, 2
SHORT_NAMES = {"loss.gamma1": "γ1", "loss.alpha": "α", "loss.name": "loss", "sampler.name": "sampler",
               "sampler.k": "K", "optim.lr": "lr", "optim.batch_size": "batch"}
HEADLINE_LABELS = ((DEV_MRR_AT_10, "Dev MRR@10"), (BEIR_NDCG_AT_10_AVG, "BEIR nDCG@10 (avg)"))


def print_plan(space: SearchSpace) -> None:
    """`run --dry-run`: the study settings, searched and fixed fields, and the points evaluated first."""
    study = space.study
    trials = (f"{space.num_samples} points × {space.replicates} seeds ({space.base.seed}.."
              f"{space.base.seed + space.replicates - 1}) = {space.num_trials} trials" if space.replicates > 1
              else f"{space.num_samples} trials")
    print(f"study {space.name}: {study.algorithm}, {trials}, "
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


def print_trial_result(name: str, result: Any) -> None:
    """`kd-study train`: the final metrics of one trial (a trainables.train.trial.TrialResult) and where it saved."""
    table(f"{name}: final metrics", ["metric", "value"], metric_rows(result.metrics))
    if result.checkpoint_path:
        print(f"checkpoint: {result.checkpoint_path}")
    if result.student_dir:
        print(f"student:    {result.student_dir}")


class Counts(NamedTuple):
    """Trials of a study by state, as the live view counts them."""

    finished: int = 0
    stopped: int = 0     # stopped early by the scheduler (ASHA)
    failed: int = 0
    running: int = 0

    @property
    def ended(self) -> int:
        return self.finished + self.stopped + self.failed


class StudyView:
    """The live view of a running study: one line per trial start and end, and a status line on a terminal.

    A trial's end line: its searched values, metric, wall time, the best so far, the counts and the
    ETA (this session's trial throughput × the trials left). The status line (counts, best,
    elapsed, ETA) is redrawn in place at most once a second, only when stdout is a terminal and
    `live`; a pipe or a log file gets, in its place, a progress line per running trial at most once
    per `KD_PROGRESS_INTERVAL_S` (study.console.progress; `eval_keys`: the evaluations it may show). Picklable
    (Tune pickles its callbacks): it holds no stream, it looks sys.stdout up when it prints.
    """

    def __init__(self, name: str, num_samples: int, metrics: list[str], modes: list[str], live: bool = True,
                 clock=time.monotonic, eval_keys: list[str] | None = None):
        self.name, self.num_samples, self.metrics, self.modes, self.live = name, num_samples, metrics, modes, live
        self.clock = clock
        self.progress = TrialProgress([*metrics, *(eval_keys or [])], clock=clock)
        self.best: tuple[float, str] | None = None
        self._started: dict[str, float] = {}
        self._session_start: float | None = None
        self._ended_here = 0
        self._drawn_at: float | None = None
        self._status_shown = False

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "clock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, clock=time.monotonic)
        if "progress" not in self.__dict__:   # pickled before the view had progress lines
            self.progress = TrialProgress(self.metrics, clock=self.clock)
        self.progress.clock = self.clock

    # -- events ------------------------------------------------------------------------------------
    def started(self, trial_id: str, config: dict[str, Any], total_steps: int | None = None) -> None:
        now = self.clock()
        if self._session_start is None:
            self._session_start = now
        self._started[trial_id] = now
        self.progress.started(trial_id, total_steps)
        self._line(f"trial {trial_id} started   {params_text(config)}")

    def result(self, trial_id: str, metrics: dict[str, Any]) -> None:
        """A report of a running trial: its progress line when due, in a log only (a terminal has the status line)."""
        if self.live and not _is_terminal(sys.stdout):
            text = self.progress.result(trial_id, metrics)
            if text:
                self._line(text)

    def finished(self, trial_id: str, config: dict[str, Any], result: dict[str, Any], counts: Counts) -> None:
        metric, mode = self.metrics[0], self.modes[0]
        value = result.get(metric)
        if isinstance(value, (int, float)) and (self.best is None or (value > self.best[0] if mode == "max"
                                                                      else value < self.best[0])):
            self.best = (float(value), trial_id)
        scores = "  ".join(f"{m} {_fmt_value(result.get(m))}" for m in self.metrics)
        self._ended(trial_id, f"trial {trial_id} finished  {scores}  {self._took(trial_id, result)}  "
                    f"{params_text(config)}", counts)

    def stopped_early(self, trial_id: str, config: dict[str, Any], result: dict[str, Any], counts: Counts) -> None:
        metric = self.metrics[0]
        self._ended(trial_id, f"trial {trial_id} stopped early ({metric} so far {_fmt_value(result.get(metric))})  "
                    f"{self._took(trial_id, result)}  {params_text(config)}", counts)

    def failed(self, trial_id: str, cause: str, counts: Counts) -> None:
        self._ended(trial_id, f"trial {trial_id} failed: {cause}", counts)

    def tick(self, counts: Counts) -> None:
        """Tune's loop turned: redraw the status line (a terminal only, at most once a second)."""
        now = self.clock()
        if self._session_start is None:
            self._session_start = now
        if not self._live() or (self._drawn_at is not None and now - self._drawn_at < 1.0):
            return
        self._drawn_at = now
        width = _terminal_width() - 1
        out = sys.stdout
        out.write("\r\x1b[K" + self.status(counts)[:width])
        out.flush()
        self._status_shown = True

    def close(self) -> None:
        self._clear_status()

    # -- text --------------------------------------------------------------------------------------
    def status(self, counts: Counts) -> str:
        """`study NAME: 2/6 done, 1 running, 0 failed; best dev_mrr_at_10 0.4123 (trial); 3m10s, ETA 4m05s`."""
        parts = [f"study {self.name}: {counts.finished}/{self.num_samples} done"]
        if counts.stopped:
            parts.append(f"{counts.stopped} stopped early")
        parts.append(f"{counts.running} running, {counts.failed} failed")
        text = ", ".join(parts)
        if self.best is not None:
            text += f"; best {self.metrics[0]} {self.best[0]:.4f} ({self.best[1]})"
        if self._session_start is not None:
            text += f"; {duration(self.clock() - self._session_start)}"
            eta = self.eta(counts)
            if eta is not None:
                text += f", ETA {duration(eta)}"
        return text

    def eta(self, counts: Counts) -> float | None:
        """Seconds left: the time per ended trial in this session (concurrency included) × the trials left."""
        left = self.num_samples - counts.ended
        if left <= 0:
            return 0.0
        if not self._ended_here or self._session_start is None:
            return None
        return (self.clock() - self._session_start) / self._ended_here * left

    def _took(self, trial_id: str, result: dict[str, Any]) -> str:
        start = self._started.pop(trial_id, None)
        seconds = self.clock() - start if start is not None else result.get("time_total_s")
        return f"in {duration(seconds)}" if isinstance(seconds, (int, float)) else ""

    def _ended(self, trial_id: str, text: str, counts: Counts) -> None:
        self._ended_here += 1
        self.progress.ended(trial_id)
        self._line(f"{text}\n  {self.status(counts)}")

    def _line(self, text: str) -> None:
        self._clear_status()
        print(f"{PROG}: {text}", flush=True)
        self._drawn_at = None

    def _clear_status(self) -> None:
        if self._status_shown:
            sys.stdout.write("\r\x1b[K")
            sys.stdout.flush()
            self._status_shown = False

    def _live(self) -> bool:
        return self.live and _is_terminal(sys.stdout)


def params_text(config: dict[str, Any]) -> str:
    """A trial's searched values in short names: `loss=wkl γ1=2 α=1 sampler=topk K=8 lr=0.0001`."""
    return " ".join(f"{SHORT_NAMES.get(k, k)}={_fmt_value(v)}" for k, v in sorted(config.items()))


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
    from study.track.tracking import redact

    one_line = " ".join(redact(str(message)).split())
    print(f"{PROG}: error: {one_line}", file=sys.stderr, flush=True)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


def _fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
