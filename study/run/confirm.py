"""`kd-study confirm NAME --top N`: re-run a study's best points at a higher fidelity, and say whether the ranking holds.

A sweep is cheap on purpose (few steps, a judged + random-distractor sub-corpus); its ranking is
only worth something if it survives the real setting. The confirmation is a child study of the
sweep: the top N points (by the sweep's mean over seeds, in its objective's mode) as
`points_to_evaluate` of a `random` study with `num_samples: N` (so exactly those points run, each
with `--replicates` seeds), evaluated on the full corpus (`eval.subset_distractors: null`) and
trained longer (twice the sweep's epochs or max_steps unless --epochs/--max-steps say otherwise).
Its parent run nests under the sweep's parent run (PARENT_RUN_TAG, CONFIRMS_TAG).

Then: Kendall's τ between the sweep's and the confirmation's means of the points (scipy.stats.
kendalltau) with a 95% percentile bootstrap interval over points, and the confirmed tied-best
set. Written to <sweep dir>/confirm/<child>.md (+ .csv), logged on the sweep's parent run under
CONFIRM_ARTIFACT_DIR.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainables.config import ConfigError, check_name

from study.track import tags
from study.paths import StudyPaths
from study.space.replicates import base_seed_of, point_id
from study.report.ranking import kendall_tau
from study.report.stats import ALPHA



@dataclass
class Confirmation:
    """The confirmation of one study: its rows (one per point), τ and its interval, the tied-best points."""

    study: str
    child: str
    metric: str                    # the sweep's
    confirm_metric: str            # the child's (no sub-corpus suffix)
    mode: str
    rows: list[dict[str, Any]]     # point, params, sweep_mean, sweep_n, sweep_rank, confirm_mean, confirm_n, confirm_rank, tied
    tau: float
    tau_low: float
    tau_high: float
    p_value: float
    tied_test: str
    n_queries: int = 0
    files: list[Path] = field(default_factory=list)
    outcome: Any = None


# ---- the child study's space -------------------------------------------------------------------------
def confirm_space_file(name: str, root: str | None, top_points: list[dict[str, Any]], *, child: str,
                       replicates: int | None, pins: dict[str, Any], epochs: int | None,
                       max_steps: int | None, metric: str, mode: str) -> Path:
    """Write the child study's space: the sweep's resolved space, its top points, the full corpus, longer training."""
    paths = StudyPaths.of(name, root)
    raw = yaml.safe_load(paths.space_resolved.read_text())
    base = raw["base"]
    fixed = dict(raw.get("fixed") or {})
    fixed["eval.subset_distractors"] = None
    fixed.update(training_length(base.get("optim", {}), epochs, max_steps))
    fixed.update(pins)
    search = dict(raw.get("search") or {})
    study = dict(raw["study"])
    for dotted, values in (study.pop("grid", None) or {}).items():   # grid shorthand → categorical search
        search[dotted] = {"type": "categorical", "choices": values}
    search = {k: v for k, v in search.items() if k not in fixed}
    points = [{k: v for k, v in p.items() if k in search} for p in top_points]
    if study.get("baseline"):   # a pinned field is no longer searched, so no longer a baseline key
        study["baseline"] = {k: v for k, v in study["baseline"].items() if k in search} or None
    study.pop("contrasts", None)   # the top N points rarely hold a contrast's pairs; confirm compares ranks
    study.update(name=child, algorithm="random", num_samples=len(points), points_to_evaluate=points,
                 scheduler="none", metric=metric, mode=mode, objectives=None,
                 replicates=replicates or study.get("replicates", 1))
    raw.update(fixed=fixed, search=search, study=study)
    out = paths.dir / "confirm" / f"{child}.space.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return out


def training_length(optim: dict[str, Any], epochs: int | None, max_steps: int | None) -> dict[str, int]:
    """The confirmation's training length, as fields it fixes: --epochs / --max-steps, else twice the sweep's
    max_steps (when its base sets them) or epochs. `optim`: the sweep's base `optim` section."""
    if epochs is not None or max_steps is not None:
        return {key: value for key, value in (("optim.epochs", epochs), ("optim.max_steps", max_steps))
                if value is not None}
    if optim.get("max_steps") is not None:
        return {"optim.max_steps": 2 * int(optim["max_steps"])}
    return {"optim.epochs": 2 * int(optim.get("epochs", 1))}


def unsuffixed(metric: str, suffix: str) -> str:
    """The full-corpus key of a sub-corpus metric (`dev_mrr_at_10_subset500` → `dev_mrr_at_10`)."""
    return metric[:-len(suffix)] if suffix and metric.endswith(suffix) else metric


# ---- points of a study ------------------------------------------------------------------------------
def point_means(study_runs, space, metric: str, exclude: set[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Point id → {params (active searched values), mean of `metric` over its seeds, n seeds, run ids}.

    A point is its active searched values (`space.is_active`), the same rule the searcher's
    `point_id` hashes, so a sweep's point and its confirmation share an id; `exclude` drops fields
    the confirmation pinned.
    """
    frame = study_runs.trials
    points: dict[str, dict[str, Any]] = {}
    if metric not in frame.columns:
        return points
    for _, row in frame.iterrows():
        chosen: dict[str, Any] = {}
        for param in space.params:
            if param.name in row.index and space.is_active(param, chosen):
                chosen[param.name] = _plain(row[param.name])
        if "seed" in chosen and "replicate" in row.index:   # a run logs the seed it trained with, not the point's
            chosen["seed"] = base_seed_of(chosen["seed"], row["replicate"])
        params = {k: v for k, v in chosen.items() if k not in exclude}
        value = row[metric]
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        entry = points.setdefault(point_id(params), {"params": params, "values": [], "run_ids": []})
        entry["values"].append(float(value))
        entry["run_ids"].append(row["run_id"])
    for entry in points.values():
        entry["mean"], entry["n"] = sum(entry["values"]) / len(entry["values"]), len(entry["values"])
    return points


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def top_points(points: dict[str, dict[str, Any]], n: int, mode: str) -> list[str]:
    return sorted(points, key=lambda p: points[p]["mean"], reverse=(mode == "max"))[:n]


def ranks(values: list[float], mode: str) -> list[int]:
    order = sorted(range(len(values)), key=lambda i: values[i], reverse=(mode == "max"))
    out = [0] * len(values)
    for rank, i in enumerate(order, 1):
        out[i] = rank
    return out


# ---- statistics -------------------------------------------------------------------------------------
def tied_with_best(per_point: dict[str, Any], means: dict[str, float], mode: str,
                   alpha: float = ALPHA) -> tuple[dict[str, bool], str, int]:
    """Points statistically tied with the best: each point against the best, Holm-corrected.

    `per_point[p]`: its queries × seeds values (`cells.cell_values`: one column per replicate), paired with
    the best's on shared queries and replicates. The test is the report's (`stats.paired_contrast`): over
    queries and seeds, and over queries only with one seed. Returns ({point: tied}, the test's description,
    n queries). The best is tied with itself.
    """
    import study.report.stats as stats
    from study.report.cells import paired_values

    best = max(means, key=means.get) if mode == "max" else min(means, key=means.get)
    tied = {p: p == best for p in means}
    others = [p for p in means if p != best and p in per_point and best in per_point]
    contrasts = [stats.paired_contrast(*paired_values(per_point[p], per_point[best])) for p in others]
    n_queries = min((c.n_queries for c in contrasts), default=0)
    if not others or n_queries < 2:
        for p in means:   # no per-query scores: nothing can be separated from the best
            tied[p] = True
        return tied, "no per-query scores: every point counted as tied", n_queries
    adjusted = stats.adjust_p_values([c.p_value for c in contrasts], "holm")
    for p, is_tied in zip(others, stats.tied_with_best(adjusted, [False] * len(others), alpha)):
        tied[p] = bool(is_tied)
    n_seeds = min(c.n_seeds for c in contrasts)
    over = f"{n_queries} queries × {n_seeds} seeds" if n_seeds > 1 else f"{n_queries} queries (one seed)"
    return tied, f"paired test over {over} vs the best, Holm-corrected, α = {alpha}", n_queries


# ---- the whole verb ---------------------------------------------------------------------------------
def child_name(name: str, child: str | None = None) -> str:
    """The confirmation study's name: `child` (checked) or NAME-confirm."""
    return check_name(child or f"{name}-confirm", "--name")


def confirm_study(name: str, opts, *, top: int, replicates: int | None = None, pins: dict[str, Any] | None = None,
                  epochs: int | None = None, max_steps: int | None = None, child: str | None = None) -> Confirmation:
    """Run the confirmation of study `name` (a child study) and compare its ranking with the sweep's."""
    from study.run.preflight import check_existing_study
    from study.report.runs import load_study_runs
    from study.run.runner import run_study
    from study.space.schema import load_space

    pins = dict(pins or {})
    if top < 2:
        raise ConfigError(f"--top {top}: a rank correlation needs at least 2 points")
    paths = check_existing_study(name, opts.root)
    state = paths.read_state()
    tracking_uri = state["tracking_uri"]
    child = child_name(name, child)
    sweep_space = load_space(paths.space_resolved)
    sweep = load_study_runs(name, tracking_uri)
    metric, mode = (sweep.objectives[0] if sweep.objectives else (sweep_space.metrics[0], sweep_space.modes[0]))
    # a field the confirmation fixes (a --set pin, or a searched training length such as the arms' optim.epochs) is
    # not part of a point: the sweep's point and its confirmation, trained longer, must share an id
    pinned = set(pins) | set(training_length(sweep_space.base.optim.model_dump(), epochs, max_steps))
    points = point_means(sweep, sweep_space, metric, exclude=pinned)
    if len(points) < 2:
        raise ConfigError(f"study {name!r} has {len(points)} finished point(s) with {metric}; confirm needs 2")
    chosen = top_points(points, top, mode)
    confirm_metric = unsuffixed(metric, sweep_space.base.eval.metric_suffix)
    space_file = confirm_space_file(name, opts.root, [points[p]["params"] for p in chosen], child=child,
                                    replicates=replicates, pins=pins, epochs=epochs, max_steps=max_steps,
                                    metric=confirm_metric, mode=mode)
    space = load_space(space_file)
    opts.experiment = opts.experiment or state.get("experiment") or name
    opts.tracking_uri = tracking_uri
    done = StudyPaths.of(child, opts.root)
    if done.exists() and done.read_state().get("status") == "finished":
        opts.say(f"kd-study: confirmation study {child} already finished; comparing it with {name}")
        outcome = None
    else:   # an existing unfinished child is refused by run_study (continue it with `kd-study resume CHILD`)
        outcome = run_study(space, opts, parent_tags={tags.PARENT_RUN_TAG: sweep.parent_run_id,
                                                      tags.CONFIRMS_TAG: name})
        if outcome.interrupted or not outcome.finished:
            nan = float("nan")
            return Confirmation(name, child, metric, confirm_metric, mode, [], nan, nan, nan, nan, "", outcome=outcome)
    result = compare(name, child, tracking_uri, sweep_space, points, chosen, metric, confirm_metric, mode, pinned)
    result.outcome = outcome
    result.files = write_confirmation(result, paths.dir / "confirm")
    try:
        from study.report.runs import log_on_parent

        log_on_parent(sweep, result.files, tags.CONFIRM_ARTIFACT_DIR)
    except Exception as error:  # noqa: BLE001 - the files are on disk either way
        opts.say(f"kd-study: could not log the confirmation on {name}'s parent run: {error}")
    return result


def compare(name: str, child: str, tracking_uri: str, sweep_space, sweep_points: dict, chosen: list[str],
            metric: str, confirm_metric: str, mode: str, pinned: set[str]) -> Confirmation:
    """The confirmation table of finished child study `child`: both means per point, τ, the tied-best set."""
    from study.report.cells import cell_values
    from study.report.runs import load_per_query, load_study_runs

    confirmed = load_study_runs(child, tracking_uri)
    got = point_means(confirmed, sweep_space, confirm_metric, exclude=pinned)
    both = [p for p in chosen if p in got]
    sweep_values = [sweep_points[p]["mean"] for p in both]
    confirm_values = [got[p]["mean"] for p in both]
    tau, low, high, pvalue = kendall_tau(sweep_values, confirm_values)
    per_query = load_per_query(tracking_uri, [r for p in both for r in got[p]["run_ids"]], [confirm_metric])
    trials = confirmed.trials.set_index("run_id", drop=False)
    per_point = {p: cell_values(trials.loc[got[p]["run_ids"]], per_query, confirm_metric) for p in both}
    tied, test, n_queries = tied_with_best({p: v for p, v in per_point.items() if v is not None},
                                           {p: got[p]["mean"] for p in both}, mode)
    sweep_ranks, confirm_ranks = ranks(sweep_values, mode), ranks(confirm_values, mode)
    rows = [{"point": p, "params": sweep_points[p]["params"], "sweep_mean": sweep_points[p]["mean"],
             "sweep_n": sweep_points[p]["n"], "sweep_rank": sweep_ranks[i], "confirm_mean": got[p]["mean"],
             "confirm_n": got[p]["n"], "confirm_rank": confirm_ranks[i], "tied": tied.get(p, False)}
            for i, p in enumerate(both)]
    return Confirmation(name, child, metric, confirm_metric, mode, rows, tau, low, high, pvalue, test, n_queries)


# ---- output -----------------------------------------------------------------------------------------
def table_rows(result: Confirmation) -> tuple[list[str], list[list[str]]]:
    header = ["point", "params", f"sweep {result.metric}", "seeds", "sweep rank",
              f"confirmed {result.confirm_metric}", "seeds", "confirmed rank", "tied with best"]
    rows = [[r["point"], " ".join(f"{k}={v}" for k, v in r["params"].items()), f"{r['sweep_mean']:.4f}",
             str(r["sweep_n"]), str(r["sweep_rank"]), f"{r['confirm_mean']:.4f}", str(r["confirm_n"]),
             str(r["confirm_rank"]), "yes" if r["tied"] else ""]
            for r in sorted(result.rows, key=lambda r: r["confirm_rank"])]
    return header, rows


def tau_line(result: Confirmation) -> str:
    interval = ("95% CI undefined with fewer than 3 points" if math.isnan(result.tau_low)
                else f"95% bootstrap CI [{result.tau_low:.2f}, {result.tau_high:.2f}] over points")
    return (f"Kendall τ (sweep {result.metric} vs confirmed {result.confirm_metric}, {len(result.rows)} points) = "
            f"{result.tau:.2f}, {interval}")


def write_confirmation(result: Confirmation, folder: Path) -> list[Path]:
    """`<child>.md` (the table, τ, the tied-best set and its test) and `<child>.csv` (the rows)."""
    import csv

    from study.report.text import markdown_table

    folder.mkdir(parents=True, exist_ok=True)
    header, rows = table_rows(result)
    tied = [r["point"] for r in result.rows if r["tied"]]
    md = folder / f"{result.child}.md"
    md.write_text("\n".join([
        f"# Confirmation of {result.study} ({result.child})", "",
        f"Top {len(result.rows)} points of the sweep re-run on the full corpus with longer training; "
        f"{'higher' if result.mode == 'max' else 'lower'} is better.", "",
        markdown_table(header, rows), "",
        tau_line(result) + ".", "",
        f"Confirmed tied-best set: {', '.join(tied) or 'none'} ({result.tied_test}).", ""]))
    path_csv = folder / f"{result.child}.csv"
    with path_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["point", "params", "sweep_mean", "sweep_seeds", "sweep_rank", "confirm_mean",
                         "confirm_seeds", "confirm_rank", "tied_with_best"])
        for r in result.rows:
            writer.writerow([r["point"], yaml.safe_dump(r["params"], default_flow_style=True).strip(),
                             r["sweep_mean"], r["sweep_n"], r["sweep_rank"], r["confirm_mean"], r["confirm_n"],
                             r["confirm_rank"], r["tied"]])
    return [md, path_csv]
