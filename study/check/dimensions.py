"""`kd-study check`: what the trials of a space would actually do, and which dimensions cannot change them.

A space can validate and still test nothing: a KL warm-up as long as training makes every WKL trial
plain KL, a β refresh interval past the last step leaves β at the initial ranks, a softmax at τ = 1
over cosines is near uniform, K close to the pool depth makes every sampler pick the same
candidates, a cosine student cannot reach a cross-encoder's margins, α > γ1 gives γ2 < 0.

The check derives, for each trial config of a set of points (the grid, or the space's corners —
every combination of each searched field's extremes, honouring `when` — plus a seeded random
sample), one value per dimension. Each dimension is one `Derivation`: the fields it reads (its
results are memoised on their values) and a pure function `(TrialConfig, Evidence) -> Derived`.
`Evidence` holds what a config does not: the number of training queries, the sampler names the
space can use, and a `ScoreSample` of teacher and initial-student scores over training pools (from
the study's cached assets, or built for a few seeded queries; see `study.check.scores`).

Levels: `error` — the configured value provably cannot do what the space searches it for (the run
stops); `warning` — measured on a score sample, which may misjudge the full data (printed).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainables.config import ConfigError, TrialConfig, get_dotted
from trainables.train.epoch_plan import total_steps
from trainables.samplers import sample_candidates

from study.space.params import ParamSpec, Scalar, SearchParam
from study.space.schema import SearchSpace

LEVELS = ("ok", "warning", "error")

# A softmax whose mean entropy is ≥ this share of ln(n) treats the list as (nearly) uniform: the
# loss sees no preference to distil.
NEAR_UNIFORM_ENTROPY = 0.98
# Two samplers picking ≥ this share of the same candidates on average test the same thing.
SAME_PICKS_OVERLAP = 0.9
# WKL weights whose max/min ratio over a list is below this barely re-weight KL.
FLAT_WEIGHT_RATIO = 1.05
# Without teacher scores, a cross-encoder's margins are taken from its usual logit range (about
# −10 … +10, margins of several units); measured margins replace this whenever scores exist.
CROSS_ENCODER_MARGIN_PRIOR = 5.0
MAX_CORNERS = 4096
NO_SCORES = "n/a (no scores)"


@dataclass(frozen=True)
class ScoreSample:
    """Teacher and initial-student scores of training queries' positives and pools ([Q, P], [Q, N], NaN padded)."""

    teacher_positive: np.ndarray
    teacher_pool: np.ndarray
    student_positive: np.ndarray
    student_pool: np.ndarray
    source: str

    def __post_init__(self) -> None:
        q = self.teacher_pool.shape[0]
        for name in ("teacher_positive", "student_positive", "student_pool"):
            if getattr(self, name).shape[0] != q:
                raise ValueError(f"ScoreSample.{name} has {getattr(self, name).shape[0]} rows, expected {q}")

    @property
    def n_queries(self) -> int:
        return self.teacher_pool.shape[0]


@dataclass(frozen=True)
class Evidence:
    """What the derivations read besides a trial config."""

    n_queries: int | None = None          # training queries a trial trains on
    n_queries_source: str = "unknown"
    samplers: tuple[str, ...] = ()        # the sampler names the space's trials use
    scores: ScoreSample | None = None
    scores_note: str = "no teacher scores"
    scheduler: str = "none"
    asha_grace_period: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class Derived:
    """One dimension of one trial: a number (for the range), its text, and a flag when it cannot work."""

    value: float | None
    text: str
    level: str = "ok"
    why: str = ""


@dataclass(frozen=True)
class Derivation:
    dimension: str
    reads: tuple[str, ...]        # dotted fields (or sections) the result depends on
    derive: Callable[[TrialConfig, Evidence], Derived | None]   # None: not part of this trial


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
        return _number(low) if low == high else f"{_number(low)} … {_number(high)}"


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


# ---- the derivations ------------------------------------------------------------------------------
def derive_steps(cfg: TrialConfig, ev: Evidence) -> Derived:
    """Optimiser steps: epochs × ⌊queries / batch⌋, or `optim.max_steps` (trainables.train.epoch_plan.total_steps)."""
    steps = _steps(cfg, ev)
    if steps is None:
        return Derived(None, "unknown (training queries unknown)", "warning",
                       "the number of training queries is unknown (data not loaded), so no step count")
    basis = ("max_steps" if cfg.optim.max_steps is not None
             else f"{ev.n_queries:,} q × {cfg.optim.epochs} ep / {cfg.optim.batch_size}")
    return Derived(steps, f"{steps:,} ({basis})")


def derive_warmup(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """WKL's KL warm-up share of the steps: at ≥ 100 % the trial never runs WKL (it is plain KL)."""
    if cfg.loss.name != "wkl":
        return None
    steps = _steps(cfg, ev)
    warmup = cfg.loss.kl_warmup_steps
    if warmup == 0 and cfg.init.start == "warmup":   # the WKL paper's protocol: the warm-up is a shared student
        shared = cfg.init.warmup
        return Derived(0.0, f"refines a shared {shared.loss.name} warm-up student ({shared.steps:,} steps, init.warmup)")
    if steps is None or warmup == 0:
        return Derived(0.0 if warmup == 0 else None, "no KL warm-up" if warmup == 0 else f"{warmup:,} steps")
    share = warmup / steps
    text = f"KL {warmup:,} of {steps:,} steps ({share:.0%}); LR warm-up {cfg.optim.warmup_ratio:.0%}"
    if warmup >= steps:
        return Derived(share, text, "error", f"loss.kl_warmup_steps={warmup:,} ≥ the {steps:,} steps: WKL never "
                                             "runs, the trial is plain KL (γ1 and α cannot change it)")
    return Derived(share, text)


def derive_beta_refreshes(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """β refreshes from the student's ranks (trainables.losses.is_refresh_step) over the trial's steps."""
    from trainables.train.rank_table import is_refresh_step, uses_beta

    if not uses_beta(cfg.loss):
        return None
    steps = _steps(cfg, ev)
    if steps is None:
        return Derived(None, "unknown")
    count = _refreshes(cfg, steps, is_refresh_step)
    text = f"{count:,} (every {cfg.loss.beta_refresh_steps:,} of {steps:,} steps)"
    if count == 0:
        return Derived(0, text, "error", f"loss.beta_refresh_steps={cfg.loss.beta_refresh_steps:,} with "
                                         f"{steps:,} steps (KL warm-up {cfg.loss.kl_warmup_steps:,}): β is never "
                                         "refreshed and stays at the initial student's ranks all run")
    return Derived(count, text)


def derive_gamma2(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """γ2,i = γ1 − β_i over |β| < α: its lowest value γ1 − α (or the floor); the paper needs γ2 > 0 or all 0."""
    if cfg.loss.name != "wkl":
        return None
    gamma1, alpha, floor = cfg.loss.gamma1, cfg.loss.alpha, cfg.loss.gamma2_floor
    if alpha == 0:
        return Derived(gamma1, f"γ2 = γ1 = {gamma1:g}")
    low = gamma1 - alpha if floor is None else max(gamma1 - alpha, floor)
    text = f"γ2 ∈ ({low:g}, {gamma1 + alpha:g})" + (f", floor {floor:g}" if floor is not None else "")
    if low < 0:
        return Derived(low, text, "error", f"γ2 = γ1 − β reaches γ1 − α = {gamma1 - alpha:g} < 0: the paper needs "
                                           "γ2 > 0 for every negative (or all 0); keep α ≤ γ1 or set "
                                           "loss.gamma2_floor: 0")
    return Derived(low, text)


def derive_teacher_entropy(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """Mean entropy of softmax(t / τ_t) over each query's loss list, as a share of ln(list size)."""
    if cfg.loss.name == "margin_mse":
        return None
    lists = _loss_lists(cfg, ev)
    if lists is None:
        return Derived(None, NO_SCORES)
    share = _entropy_share(lists[0], cfg.loss.teacher_temperature)
    return _uniformity("teacher", "loss.teacher_temperature", cfg.loss.teacher_temperature, share)


def derive_student_entropy(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """The same for the initial student's softmax(s / τ_s): near uniform, its gradients are tiny."""
    if cfg.loss.name == "margin_mse":
        return None
    lists = _loss_lists(cfg, ev)
    if lists is None:
        return Derived(None, NO_SCORES)
    share = _entropy_share(lists[1], cfg.loss.student_temperature)
    return _uniformity("initial student", "loss.student_temperature", cfg.loss.student_temperature, share)


def derive_wkl_weights(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """Median over queries of max/min WKL weight in the loss list (initial student's q, ranks and β)."""
    if cfg.loss.name != "wkl" or (cfg.loss.gamma1 == 0 and cfg.loss.alpha == 0):
        return None
    lists = _loss_lists(cfg, ev)
    if lists is None:
        return Derived(None, NO_SCORES)
    ratio = wkl_weight_ratio(lists[1], lists[2], cfg)
    text = f"max/min weight {_number(ratio)} (median over {len(lists[1])} queries)"
    if ratio < FLAT_WEIGHT_RATIO:
        return Derived(ratio, text, "warning", f"WKL's weights are near equal (max/min {ratio:.3f}): the trial is "
                                               "KL times a constant; γ1 and α change nothing")
    return Derived(ratio, text)


def derive_sampler_overlap(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """Expected share of the same candidates picked by two of the space's samplers at this K and pool."""
    if len(ev.samplers) < 2:
        return None
    pools = ev.scores.teacher_pool if ev.scores is not None else _ranked_pools(cfg.data.max_pool_size)
    overlaps = sampler_overlaps(pools, ev.samplers, cfg.sampler.k, ev.seed)
    (a, b), share = max(overlaps.items(), key=lambda item: item[1])
    depth = int(np.median((~np.isnan(pools)).sum(axis=1)))
    text = f"{a}∩{b} {share:.0%} at K={cfg.sampler.k}, pool {depth}"
    if share >= SAME_PICKS_OVERLAP:
        return Derived(share, text, "warning", f"{a} and {b} pick {share:.0%} of the same candidates at "
                                               f"K={cfg.sampler.k} of a {depth}-candidate pool: they test the same thing")
    return Derived(share, text)


def derive_margins(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """Teacher |margin| (positive − negative, 95th percentile) against the largest margin the student can score."""
    if cfg.loss.name != "margin_mse":
        return None
    scale = cfg.loss.margin_scale
    reach = 2.0 * scale if cfg.student.similarity == "cosine" else math.inf
    lists = _loss_lists(cfg, ev)
    if lists is not None:
        teacher_margin = _margin_p95(lists[0])
        student_margin = _margin_p95(lists[1]) * scale
        seen = f"teacher p95 {teacher_margin:.3g}, initial student p95 {student_margin:.3g}"
    elif cfg.teacher.kind == "cross_encoder" or cfg.teacher.similarity == "dot":
        teacher_margin, seen = CROSS_ENCODER_MARGIN_PRIOR, f"teacher ~{CROSS_ENCODER_MARGIN_PRIOR:g} (logit prior)"
    else:
        teacher_margin, seen = 2.0, "teacher ≤ 2 (cosine)"
    text = f"{seen}; student reaches ≤ {_number(reach)} (×{scale:g})"
    if teacher_margin > reach:
        return Derived(teacher_margin / reach, text, "error",
                       f"the teacher's margins ({teacher_margin:.3g}) exceed the most a {cfg.student.similarity} "
                       f"student scaled ×{scale:g} can score ({reach:g}): MarginMSE cannot be matched; raise "
                       "loss.student_scale")
    return Derived(teacher_margin / reach, text)


def derive_evaluations(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """Intermediate evaluations (`eval.every_steps`) before the last step: what ASHA stops trials on."""
    steps = _steps(cfg, ev)
    every = cfg.eval.every_steps
    if every is None or steps is None:
        return None
    count = (steps - 1) // every
    text = f"{count:,} (every {every:,} of {steps:,} steps)"
    if ev.scheduler == "asha" and count == 0:
        return Derived(count, text, "error", f"eval.every_steps={every:,} ≥ the {steps:,} steps: no intermediate "
                                             "evaluation, so ASHA cannot stop any trial")
    grace = ev.asha_grace_period
    if ev.scheduler == "asha" and grace is not None and grace >= steps:
        return Derived(count, text, "error", f"study.asha.grace_period={grace:,} ≥ the {steps:,} steps: ASHA "
                                             "never stops a trial")
    return Derived(count, text)


def derive_auxiliary_share(cfg: TrialConfig, ev: Evidence) -> Derived:
    """Share of the student-score gradient norm the auxiliary terms (in-batch NLL) carry on a sample batch."""
    from study.check.gradients import AUXILIARY_SHARE_WARNING, auxiliary_gradient_share, prior_lists

    lists = _loss_lists(cfg, ev)
    if lists is None:
        teacher, student, ranks, pool = prior_lists(cfg, seed=ev.seed)
        source = "prior cosine-like scores"
    else:
        (teacher, student, ranks), pool, source = lists, ev.scores.student_pool, "sample"
    share, distill, aux = auxiliary_gradient_share(cfg, teacher, student, ranks, pool, ev.seed)
    if cfg.loss.in_batch_weight <= 0:
        return Derived(0.0, "none (loss.in_batch_weight = 0)")
    text = f"in-batch NLL {share:.0%} (‖g‖ {aux:.3g} vs {cfg.loss.name} {distill:.3g}, {source})"
    if share > AUXILIARY_SHARE_WARNING:
        return Derived(share, text, "warning", f"the in-batch NLL (loss.in_batch_weight={cfg.loss.in_batch_weight:g}) "
                                               f"carries {share:.0%} of the gradient on the student's scores: it, "
                                               f"not {cfg.loss.name}, trains the student, a confound of every arm "
                                               "compared; set loss.in_batch_weight: 0 or declare it")
    return Derived(share, text)


# The table, in print order: add a dimension by adding a row (reads = the fields its result depends on).
STEPS = ("optim.batch_size", "optim.epochs", "optim.max_steps")
LIST = ("sampler", "seed")          # the loss list: the sampler's K picks (+ the positive), seeded
DERIVATIONS: list[Derivation] = [
    Derivation("optimiser steps", STEPS, derive_steps),
    Derivation("warm-up (KL → WKL)", (*STEPS, "optim.warmup_ratio", "loss.name", "loss.kl_warmup_steps", "init"),
               derive_warmup),
    Derivation("β refreshes", (*STEPS, "loss.name", "loss.alpha", "loss.beta_refresh_steps", "loss.kl_warmup_steps"),
               derive_beta_refreshes),
    Derivation("γ2 range", ("loss.name", "loss.gamma1", "loss.alpha", "loss.gamma2_floor"), derive_gamma2),
    Derivation("teacher softmax entropy", ("loss.name", "loss.teacher_temperature", *LIST), derive_teacher_entropy),
    Derivation("student softmax entropy", ("loss.name", "loss.student_temperature", *LIST), derive_student_entropy),
    Derivation("WKL weight spread", ("loss.name", "loss.gamma1", "loss.alpha", "loss.gamma2_floor",
                                     "loss.student_temperature", *LIST), derive_wkl_weights),
    Derivation("sampler overlap", ("sampler.k", "data.pool_depth", "data.random_additions"), derive_sampler_overlap),
    Derivation("MarginMSE margins", ("loss.name", "loss.student_scale", *LIST), derive_margins),
    Derivation("intermediate evaluations", (*STEPS, "eval.every_steps"), derive_evaluations),
    Derivation("auxiliary gradient share", ("loss.name", "loss.in_batch_weight", "loss.student_temperature",
                                            "loss.teacher_temperature", "loss.gamma1", "loss.alpha", "loss.gamma2_floor",
                                            "loss.student_scale", "loss.nll_weight", "optim.batch_size",
                                            "data.pool_depth", "data.random_additions", "teacher.kind", *LIST),
               derive_auxiliary_share),
]


# ---- the check -------------------------------------------------------------------------------------
def check_space(space: SearchSpace, evidence: Evidence, *, n_sample: int = 16,
                derivations: Iterable[Derivation] = DERIVATIONS) -> CheckReport:
    """Every derivation over the space's points (grid, or corners + a seeded sample); pure given `evidence`."""
    points, note = check_points(space, n_sample)
    base = space.base.model_dump(mode="json")
    configs: dict[int, TrialConfig] = {}   # built only for the points a derivation has not seen yet
    dimensions = []
    for derivation in derivations:
        memo: dict[str, Derived | None] = {}
        result = DimensionResult(derivation.dimension, derivation.reads)
        for i, point in enumerate(points):
            key = repr([_read(point, base, dotted) for dotted in derivation.reads])
            if key not in memo:
                if i not in configs:
                    configs[i] = space.trial_config(point)
                memo[key] = derivation.derive(configs[i], evidence)
            if memo[key] is not None:
                result.results.append((point, memo[key]))
        if result.results:
            dimensions.append(result)
    return CheckReport(space.source, len(points), note, evidence, dimensions)


def check_points(space: SearchSpace, n_sample: int = 16) -> tuple[list[dict[str, Scalar]], str]:
    """The grid (grid mode), else the corners — each searched field at its extremes, `when` honoured —
    plus `n_sample` points drawn by Optuna's seeded RandomSampler through the space's define-by-run."""
    if space.study.algorithm == "grid":
        points = space.grid_points()
        return points, f"all {len(points)} grid points"
    extremes = [SearchParam(p.name, ParamSpec(type="categorical", choices=_distinct(p.spec.extremes()),
                                              when=p.spec.when)) for p in space.params]
    from study.space import grid

    corners = grid.grid_points(extremes, space.is_active, space.source)
    note = f"{len(corners)} corners"
    if len(corners) > MAX_CORNERS:
        keep = np.random.default_rng(space.study.seed).choice(len(corners), MAX_CORNERS, replace=False)
        corners = [corners[i] for i in sorted(keep)]
        note = f"{MAX_CORNERS} of {note} (seeded)"
    sampled = sample_points(space, n_sample)
    return corners + sampled + list(space.study.points_to_evaluate), \
        f"{note} + {len(sampled)} sampled + {len(space.study.points_to_evaluate)} points to evaluate"


def sample_points(space: SearchSpace, n: int) -> list[dict[str, Scalar]]:
    """`n` points of the space as a random search would draw them (seeded by study.seed)."""
    if n <= 0 or not space.params:
        return []
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # this throwaway study only: `run`'s own is logged
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=space.study.seed))
        points = []
        for _ in range(n):
            trial = study.ask()
            space.define_by_run(trial)
            points.append(dict(trial.params))
            study.tell(trial, 0.0)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return points


def space_samplers(space: SearchSpace) -> tuple[str, ...]:
    """The sampler names the space's trials can use (searched choices, or the base's one)."""
    for param in space.params:
        if param.name == "sampler.name":
            return tuple(str(c) for c in param.spec.extremes())
    return (space.base.sampler.name,)


def evidence_for(space: SearchSpace, *, n_queries: int | None, n_queries_source: str,
                 scores: ScoreSample | None = None, scores_note: str = "no teacher scores") -> Evidence:
    study = space.study
    return Evidence(n_queries=n_queries, n_queries_source=n_queries_source, samplers=space_samplers(space),
                    scores=scores, scores_note=scores_note, scheduler=study.scheduler,
                    asha_grace_period=study.asha.grace_period or space.base.eval.every_steps, seed=study.seed)


# ---- measures on scores (pure numpy) ----------------------------------------------------------------
def sampler_overlaps(pools: np.ndarray, samplers: Iterable[str], k: int, seed: int = 0,
                     draws: int = 4) -> dict[tuple[str, str], float]:
    """Mean |A ∩ B| / K between each pair of samplers' picks (the real samplers, seeded, `draws` times)."""
    names = sorted(set(samplers))
    picks: dict[str, list[list[np.ndarray]]] = {}
    for name in names:
        rng = np.random.default_rng([seed, 7])
        # clipped: whether K fits the pools is the config's and the study's rule (check_k_fits_pool)
        picks[name] = [sample_candidates(name, pools, k, rng, "clip") for _ in range(draws)]
    shares = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            same = [len(np.intersect1d(x, y)) / max(len(x), 1)
                    for draw_a, draw_b in zip(picks[a], picks[b]) for x, y in zip(draw_a, draw_b)]
            shares[(a, b)] = float(np.mean(same))
    return shares


def wkl_weight_ratio(student_lists: np.ndarray, ranks: np.ndarray, cfg: TrialConfig) -> float:
    """Median over queries of max/min WKL weight over the list (column 0 the positive), from WKL's own code."""
    import torch

    from trainables.losses import gamma2_values, wkl_beta, wkl_log_weights

    s = torch.from_numpy(student_lists.astype(np.float64))
    positives = torch.zeros(s.shape, dtype=torch.bool)
    positives[:, 0] = True
    log_q = torch.log_softmax(s / cfg.loss.student_temperature, dim=1)
    beta = wkl_beta(torch.from_numpy(ranks.astype(np.float64)), positives, cfg.loss.alpha)
    gamma2 = gamma2_values(cfg.loss.gamma1, beta, cfg.loss.gamma2_floor)
    log_w = wkl_log_weights(log_q, positives, cfg.loss.gamma1, gamma2)
    spread = (log_w.max(dim=1).values - log_w.min(dim=1).values).numpy()
    return float(np.exp(np.median(spread)))


def _loss_lists(cfg: TrialConfig, ev: Evidence) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per query: [positive, K sampled candidates] of teacher scores, initial student scores, and the
    student's ranks of them among positive + pool (what β reads), drawn as a trial's first epoch would."""
    if ev.scores is None:
        return None
    sc = ev.scores
    rows = np.flatnonzero(~np.isnan(sc.teacher_positive[:, 0]) & (~np.isnan(sc.teacher_pool)).any(axis=1))
    if rows.size == 0:
        return None
    rng = np.random.default_rng([cfg.seed, 0, 0])
    picked = sample_candidates(cfg.sampler.name, sc.teacher_pool[rows], cfg.sampler.k, rng, "clip")
    width = min(len(p) for p in picked)
    cols = np.stack([p[:width] for p in picked])
    teacher = np.concatenate([sc.teacher_positive[rows, :1], np.take_along_axis(sc.teacher_pool[rows], cols, 1)], 1)
    student = np.concatenate([sc.student_positive[rows, :1], np.take_along_axis(sc.student_pool[rows], cols, 1)], 1)
    table = np.concatenate([sc.student_positive[rows, :1], sc.student_pool[rows]], 1)
    table = np.where(np.isnan(table), -np.inf, table)
    # rank among positive + pool, 1 = best (the rank table's initial ranks)
    ranks = (table[:, None, :] > student[:, :, None]).sum(axis=2) + 1
    return teacher, student, ranks.astype(np.float64)


def _entropy_share(scores: np.ndarray, temperature: float) -> float:
    z = scores / temperature
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    entropy = -(np.exp(log_p) * log_p).sum(axis=1)
    return float(np.mean(entropy / np.log(scores.shape[1]))) if scores.shape[1] > 1 else 0.0


def _uniformity(who: str, key: str, tau: float, share: float) -> Derived:
    text = f"{share:.1%} of uniform at τ={tau:g}"
    if share >= NEAR_UNIFORM_ENTROPY:
        return Derived(share, text, "warning", f"the {who}'s softmax at {key}={tau:g} is near uniform ({share:.1%} "
                                               "of the maximum entropy): the loss sees almost no preference; lower τ")
    return Derived(share, text)


def _margin_p95(lists: np.ndarray) -> float:
    return float(np.percentile(np.abs(lists[:, :1] - lists[:, 1:]), 95))


def _ranked_pools(depth: int, n_queries: int = 64) -> np.ndarray:
    """Pools of `depth` distinct scores: the samplers read only the order, so overlaps need no real scores."""
    return np.tile(np.linspace(1.0, 0.0, depth), (n_queries, 1))


def _steps(cfg: TrialConfig, ev: Evidence) -> int | None:
    if cfg.optim.max_steps is not None:
        return cfg.optim.max_steps
    return None if ev.n_queries is None else total_steps(cfg, ev.n_queries)


def _refreshes(cfg: TrialConfig, steps: int, is_refresh_step: Callable[[Any, int], bool]) -> int:
    """Refreshes before steps 1..steps (`completed` = 0 … steps − 1), by the loop's own rule."""
    return sum(1 for completed in range(steps) if is_refresh_step(cfg.loss, completed))


def _read(point: Mapping[str, Scalar], base: Mapping[str, Any], dotted: str) -> Any:
    """The value a trial of `point` has at `dotted` (a field or a section): searched values over the base's."""
    inside = {k: v for k, v in point.items() if k == dotted or k.startswith(dotted + ".")}
    try:
        static = get_dotted(base, dotted)
    except (KeyError, TypeError):
        static = None
    return static, sorted(inside.items())


def _distinct(values: list[Scalar]) -> list[Scalar]:
    out: list[Scalar] = []
    for value in values:
        if not any(value == v and type(value) is type(v) for v in out):
            out.append(value)
    return out


def _number(value: float) -> str:
    if value == math.inf:
        return "∞"
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.3g}"


__all__ = ["CheckReport", "raise_on_errors", "DERIVATIONS", "Derivation", "Derived", "Evidence", "ScoreSample", "check_points",
           "check_space", "evidence_for", "sample_points", "sampler_overlaps", "space_samplers", "wkl_weight_ratio"]
