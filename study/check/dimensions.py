"""`kd-study check`: what the trials of a space would actually do, and which dimensions cannot change them.

A space can validate and still test nothing: a KL warm-up as long as training makes every WKL trial
plain KL, a β refresh interval past the last step leaves β at the initial ranks, a softmax at τ = 1
over cosines is near uniform, K close to the pool depth makes every sampler pick the same
candidates, a cosine student cannot reach a cross-encoder's margins, α > γ1 gives γ2 < 0.

The check derives, for each trial config of a set of points (the grid, or the space's corners —
every combination of each searched field's extremes, honouring `when` — plus a seeded random
sample; study.check.points), one value per dimension. Each dimension is one `Derivation`: the fields
it reads (its results are memoised on their values) and a pure function `(TrialConfig, Evidence) -> Derived`.
`Evidence` (study.check.evidence) holds what a config does not: the number of training queries, the
sampler names the space can use, and a `ScoreSample` of teacher and initial-student scores over training
pools (from the study's cached assets, or built for a few seeded queries; see `study.check.scores`).
The results come back as a `CheckReport` (study.check.report).

Levels: `error` — the configured value provably cannot do what the space searches it for (the run
stops); `warning` — measured on a score sample, which may misjudge the full data (printed).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from pydantic import ValidationError

from trainables.config import TrialConfig, get_dotted
from trainables.config_choices import block_for
from trainables.registry import CheckRow, Derived, loss_entries, sampler_entries, sampler_function
from trainables.samplers import sample_candidates
from trainables.settings import SamplerSettings
from trainables.train.loss_checks import LIST, NO_SCORES, STEPS, entropy_share, loss_lists, trial_steps

from study.check.evidence import Evidence
from study.check.points import check_points
from study.check.report import CheckReport, DimensionResult
from study.space.params import Scalar
from study.check.controls import exempt_positive_controls
from study.space.schema import SearchSpace

# A softmax whose mean entropy is ≥ this share of ln(n) treats the list as (nearly) uniform: the
# loss sees no preference to distil.
NEAR_UNIFORM_ENTROPY = 0.98
# Two samplers picking ≥ this share of the same candidates on average test the same thing.
SAME_PICKS_OVERLAP = 0.9

Derivation = CheckRow   # a dimension: its name, the fields it reads, derive(cfg, evidence) (trainables.registry)


# ---- the derivations ------------------------------------------------------------------------------
def derive_steps(cfg: TrialConfig, ev: Evidence) -> Derived:
    """Optimiser steps: epochs × ⌊queries / batch⌋, or `optim.max_steps` (trainables.train.epoch_plan.total_steps)."""
    steps = trial_steps(cfg, ev)
    if steps is None:
        return Derived(None, "unknown (training queries unknown)", "warning",
                       "the number of training queries is unknown (data not loaded), so no step count")
    basis = ("max_steps" if cfg.optim.max_steps is not None
             else f"{ev.n_queries:,} q × {cfg.optim.epochs} ep / {cfg.optim.batch_size}")
    return Derived(steps, f"{steps:,} ({basis})")


def derive_teacher_entropy(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """Mean entropy of softmax(t / τ_t) over each query's loss list, as a share of ln(list size)."""
    if cfg.loss.name == "margin_mse":
        return None
    lists = loss_lists(cfg, ev)
    if lists is None:
        return Derived(None, NO_SCORES)
    share = entropy_share(lists[0], cfg.loss.teacher_temperature)
    return _uniformity("teacher", "loss.teacher_temperature", cfg.loss.teacher_temperature, share)


def derive_student_entropy(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """The same for the initial student's softmax(s / τ_s): near uniform, its gradients are tiny."""
    if cfg.loss.name == "margin_mse":
        return None
    lists = loss_lists(cfg, ev)
    if lists is None:
        return Derived(None, NO_SCORES)
    share = entropy_share(lists[1], cfg.loss.student_temperature)
    return _uniformity("initial student", "loss.student_temperature", cfg.loss.student_temperature, share)


def derive_sampler_overlap(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """Expected share of the same candidates picked by two of the space's samplers at this K and pool."""
    if len(ev.samplers) < 2:
        return None
    pools = ev.scores.teacher_pool if ev.scores is not None else _ranked_pools(cfg.data.max_pool_size)
    overlaps = sampler_overlaps(pools, ev.samplers, cfg.sampler.k, ev.seed, like=cfg.sampler)
    if not overlaps:
        return None
    (a, b), share = max(overlaps.items(), key=lambda item: item[1])
    depth = int(np.median((~np.isnan(pools)).sum(axis=1)))
    text = f"{a}∩{b} {share:.0%} at K={cfg.sampler.k}, pool {depth}"
    if share >= SAME_PICKS_OVERLAP:
        return Derived(share, text, "warning", f"{a} and {b} pick {share:.0%} of the same candidates at "
                                               f"K={cfg.sampler.k} of a {depth}-candidate pool: they test the same thing")
    return Derived(share, text)


def derive_evaluations(cfg: TrialConfig, ev: Evidence) -> Derived | None:
    """Intermediate evaluations (`eval.every_steps`) before the last step: what ASHA stops trials on."""
    steps = trial_steps(cfg, ev)
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

    lists = loss_lists(cfg, ev)
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
                                               "compared; set loss.in_batch_weight: 0, or state in the space's "
                                               "header why it stays")
    return Derived(share, text)


# The table, in print order: add a dimension by adding a row (reads = the fields its result depends on). A loss's or
# a sampler's own rows come from its registry entry (`check`), each asked only for the trials that use it.
def _only_for(key: str, name: str, derive: Callable[[TrialConfig, Evidence], Derived | None]):
    return lambda cfg, ev: derive(cfg, ev) if getattr(cfg, key).name == name else None


def registry_rows() -> list[Derivation]:
    """Every registered loss's and sampler's check rows, each limited to the trials of its own name."""
    rows = []
    for key, entries in (("loss", loss_entries()), ("sampler", sampler_entries())):
        for name, entry in entries.items():
            rows += [Derivation(row.dimension, tuple(dict.fromkeys((f"{key}.name", *row.reads))),
                                _only_for(key, name, row.derive)) for row in entry.check_rows()]
    return rows


DERIVATIONS: list[Derivation] = [
    Derivation("optimiser steps", STEPS, derive_steps),
    *registry_rows(),
    Derivation("teacher softmax entropy", ("loss.name", "loss.teacher_temperature", *LIST), derive_teacher_entropy),
    Derivation("student softmax entropy", ("loss.name", "loss.student_temperature", *LIST), derive_student_entropy),
    Derivation("sampler overlap", ("sampler.k", "sampler.top_n", "data.pool_depth", "data.random_additions"),
               derive_sampler_overlap),
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
    return CheckReport(space.source, len(points), note, evidence, exempt_positive_controls(space, points, dimensions))


# ---- measures on scores (pure numpy) ----------------------------------------------------------------
def sampler_overlaps(pools: np.ndarray, samplers: Iterable[str], k: int, seed: int = 0,
                     draws: int = 4, like: SamplerSettings | None = None) -> dict[tuple[str, str], float]:
    """Mean |A ∩ B| / K between each pair of samplers' picks (the real samplers, seeded, `draws` times).

    Each sampler runs with K = `k` and its settings from `like` (the trial's sampler block) where it has
    them (teacher_top_n's `top_n`), else its defaults; one whose settings cannot hold K is left out.
    """
    names = sorted(set(samplers))
    picks: dict[str, list[list[np.ndarray]]] = {}
    common = like.model_dump() if like is not None else {}
    for name in names:
        try:
            settings = like if like is not None and like.name == name else block_for(
                "sampler", {**common, "name": name, "k": k})
        except ValidationError:
            continue
        rng = np.random.default_rng([seed, 7])
        sampler = sampler_function(settings)
        # clipped: whether K fits the pools is the config's and the study's rule (check_k_fits_pool)
        picks[name] = [sample_candidates(sampler, pools, k, rng, "clip") for _ in range(draws)]
    names = [name for name in names if name in picks]
    shares = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            same = [len(np.intersect1d(x, y)) / max(len(x), 1)
                    for draw_a, draw_b in zip(picks[a], picks[b]) for x, y in zip(draw_a, draw_b)]
            shares[(a, b)] = float(np.mean(same))
    return shares


def _uniformity(who: str, key: str, tau: float, share: float) -> Derived:
    text = f"{share:.1%} of uniform at τ={tau:g}"
    if share >= NEAR_UNIFORM_ENTROPY:
        return Derived(share, text, "warning", f"the {who}'s softmax at {key}={tau:g} is near uniform ({share:.1%} "
                                               "of the maximum entropy): the loss sees almost no preference; lower τ")
    return Derived(share, text)


def _ranked_pools(depth: int, n_queries: int = 64) -> np.ndarray:
    """Pools of `depth` distinct scores: the samplers read only the order, so overlaps need no real scores."""
    return np.tile(np.linspace(1.0, 0.0, depth), (n_queries, 1))


def _read(point: Mapping[str, Scalar], base: Mapping[str, Any], dotted: str) -> Any:
    """The value a trial of `point` has at `dotted` (a field or a section): searched values over the base's."""
    inside = {k: v for k, v in point.items() if k == dotted or k.startswith(dotted + ".")}
    try:
        static = get_dotted(base, dotted)
    except (KeyError, TypeError):
        static = None
    return static, sorted(inside.items())


__all__ = ["DERIVATIONS", "Derivation", "Derived", "check_space", "registry_rows", "sampler_overlaps"]
