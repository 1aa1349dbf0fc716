"""The one list of losses and samplers: one entry per name, built in or from an installed package.

An entry holds everything kd-study knows of a loss or a sampler:
- `name` (what `loss.name` / `sampler.name` say) and `settings`, its typed config model (trainables/settings.py:
  the trial config's `loss:` / `sampler:` block is the entry's model, chosen by `name`);
- `function`: a loss's `function(settings, student_scores, teacher_scores, positive_mask, valid_mask, *, step,
  state) -> Tensor` (the pure tensor functions of trainables/losses with the block's parameters bound;
  trainables/train/dispatch.py holds the built-ins'), or a sampler's pure `function(scores, k, rng, **params)`
  (trainables/samplers), its params the settings' own fields (`bind` renames them where they differ);
- a loss's per-step `state` (a class with `start(ts, settings, saved) -> state | None`, `before_step(student,
  ts, cfg, completed, rank, world, device, tokens=None)` (`tokens`: the training set's token ids) and `table`, a [Q, P + N] tensor the step reads per candidate and hands to
  `function` as `state`, saved with every checkpoint): WKL's rank table;
- its `check` rows (`CheckRow`s that `kd-study check` derives per trial), and a report `label` and `summary`;
- `in_batch`: the function takes the step's in-batch scores (`in_batch=(scores [B, M], positive column [B],
  mask [B, M])`, None where the caller has none) as its own input, not as the auxiliary λ_IB term: `labels`.

The config's allowed names, the training step's dispatch, `kd-study check`, the report's labels and the
docs' table read these entries. Code fields may be given as `"module:attribute"` strings, resolved on first
use (as entry points are): the config schema then loads without torch or the training loop, and the
built-ins' references into trainables/train do not make an import circle (train imports the config).

External packages add entries through the entry-point groups `kd_study.losses` and `kd_study.samplers`,
each entry point naming a `LossEntry` / `SamplerEntry` object (`my_loss = "my_pkg:ENTRY"`), loaded once per
process when the config schema is built: `pip install my-kd-loss` makes `loss: {name: my_loss}` valid. A
plugin module may import trainables.registry and trainables.settings, never trainables.config.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Sequence

from pydantic import BaseModel

from trainables.errors import ConfigError
from trainables import settings as s

LOSS_GROUP = "kd_study.losses"
SAMPLER_GROUP = "kd_study.samplers"


@dataclass(frozen=True)
class Derived:
    """One `kd-study check` dimension of one trial: a number (for the range), its text, a flag when it cannot work."""

    value: float | None
    text: str
    level: str = "ok"
    why: str = ""


@dataclass(frozen=True)
class CheckRow:
    """A `kd-study check` dimension: the dotted fields its result depends on, and `derive(cfg, evidence)`
    (None: not part of this trial; `evidence` is study.check's Evidence: n_queries, scores, seed, ...)."""

    dimension: str
    reads: tuple[str, ...]
    derive: Callable[[Any, Any], Derived | None]


def resolve(ref: Any) -> Any:
    """`ref` itself, or the object a `"module:attribute"` string names."""
    if not isinstance(ref, str):
        return ref
    module, _, attribute = ref.partition(":")
    return functools.reduce(getattr, attribute.split("."), importlib.import_module(module))


@dataclass(frozen=True)
class LossEntry:
    name: str
    settings: type[s.LossSettings]
    function: Any                      # callable or "module:attribute", see the module docstring
    state: Any = None                  # class or "module:attribute"; None: a stateless loss
    check: Any = ()                    # Sequence[CheckRow] or "module:attribute"
    label: str = ""
    summary: str = ""
    in_batch: bool = False             # the function takes the step's in-batch scores as `in_batch=` (its own input)

    def compute(self) -> Callable[..., Any]:
        return resolve(self.function)

    def state_class(self) -> Any:
        return resolve(self.state)

    def check_rows(self) -> Sequence[CheckRow]:
        return tuple(resolve(self.check))


@dataclass(frozen=True)
class SamplerEntry:
    name: str
    settings: type[s.SamplerSettings]
    function: Any
    bind: Callable[[Any], dict[str, Any]] | None = None   # settings → the function's keyword params
    check: Any = ()
    label: str = ""
    summary: str = ""

    def sampler(self, settings: s.SamplerSettings | None = None) -> Callable[..., Any]:
        """The (scores, k, rng) function of `settings` (default: the model's defaults)."""
        settings = settings if settings is not None else self.settings(name=self.name)
        params = self.bind(settings) if self.bind else {
            key: getattr(settings, key) for key in type(settings).model_fields if key not in s.SamplerSettings.model_fields}
        function = resolve(self.function)
        return functools.partial(function, **params) if params else function

    def check_rows(self) -> Sequence[CheckRow]:
        return tuple(resolve(self.check))


_DISPATCH = "trainables.train.dispatch"
_CHECKS = "trainables.train.loss_checks"
BUILTIN_LOSSES = (
    LossEntry("kl", s.KLSettings, f"{_DISPATCH}:kl", label="KL", summary="KL(p_teacher ‖ q_student) over the list"),
    LossEntry("margin_mse", s.MarginMSESettings, f"{_DISPATCH}:margin_mse", check=f"{_CHECKS}:MARGIN_ROWS",
              label="MarginMSE", summary="MSE of teacher and (scaled) student margins, positive − candidate"),
    LossEntry("kl_nll", s.KLNLLSettings, f"{_DISPATCH}:kl_nll", label="KL+NLL",
              summary="KL + λ · NLL of the positive"),
    LossEntry("wkl", s.WKLSettings, f"{_DISPATCH}:wkl", state="trainables.train.rank_table:RankTable",
              check=f"{_CHECKS}:WKL_ROWS", label="WKL",
              summary="weighted KL: γ1 on positives, γ2 = γ1 − β from the student's ranks (refreshed)"),
    LossEntry("labels", s.LabelsSettings, f"{_DISPATCH}:labels", in_batch=True,
              label="labels only (no-distillation reference)",
              summary="no teacher: contrastive NLL of the positive over its K pool negatives and the batch's "
                      "passages (the no-distillation reference)"),
)
_SAMPLERS = "trainables.samplers"
BUILTIN_SAMPLERS = (
    SamplerEntry("topk", s.TopKSettings, f"{_SAMPLERS}:topk", label="top-K", summary="the K best by teacher score"),
    SamplerEntry("random", s.RandomSettings, f"{_SAMPLERS}:random", label="random", summary="K uniformly"),
    SamplerEntry("stratified", s.StratifiedSettings, f"{_SAMPLERS}:stratified", label="stratified",
                 summary="one from each of K teacher-score quantiles"),
    SamplerEntry("equal_width", s.EqualWidthSettings, f"{_SAMPLERS}:equal_width", label="equal-width",
                 summary="one from each of K equal-width teacher-score bins"),
    SamplerEntry("teacher_top_n", s.TeacherTopNSettings, f"{_SAMPLERS}:teacher_top_n",
                 bind=lambda settings: {"n": settings.top_n}, label="teacher top-N",
                 summary="K uniformly from the teacher's top N"),
)


def _discover(group: str, kind: type, builtin: Sequence[Any]) -> dict[str, Any]:
    entries = {entry.name: entry for entry in builtin}
    for point in sorted(entry_points(group=group), key=lambda p: p.name):
        entry = point.load()
        if not isinstance(entry, kind):
            raise ConfigError(f"entry point {point.name} = {point.value} ({group}): expected a {kind.__name__}, "
                              f"got {type(entry).__name__}")
        if entry.name in entries:
            raise ConfigError(f"entry point {point.value} ({group}): {kind.__name__} {entry.name!r} is already "
                              "registered")
        entries[entry.name] = entry
    return entries


@functools.cache
def loss_entries() -> dict[str, LossEntry]:
    """Every loss by name: the built-ins, then the installed packages' (entry points), in a stable order."""
    return _discover(LOSS_GROUP, LossEntry, BUILTIN_LOSSES)


@functools.cache
def sampler_entries() -> dict[str, SamplerEntry]:
    """Every sampler by name: the built-ins, then the installed packages'."""
    return _discover(SAMPLER_GROUP, SamplerEntry, BUILTIN_SAMPLERS)


def loss_entry(name: str) -> LossEntry:
    return _lookup(loss_entries(), "loss", name)


def sampler_entry(name: str) -> SamplerEntry:
    return _lookup(sampler_entries(), "sampler", name)


def _lookup(entries: dict[str, Any], kind: str, name: str) -> Any:
    if name not in entries:
        raise ConfigError(f"unknown {kind} {name!r}: expected one of {', '.join(entries)}")
    return entries[name]


def sampler_function(settings: s.SamplerSettings) -> Callable[..., Any]:
    """The (scores, k, rng) function a `sampler:` block selects, its own parameters bound (teacher_top_n's N)."""
    return sampler_entry(settings.name).sampler(settings)


def labels() -> dict[str, str]:
    """Report label of every loss and sampler name, in table order (samplers, then losses)."""
    return {e.name: e.label or e.name for e in (*sampler_entries().values(), *loss_entries().values())}


def markdown_table(builtin_only: bool = False) -> str:
    """The docs' table of every loss and sampler (docs/internals.md holds the built-ins'; a test compares)."""
    rows = ["| kind | name | settings (besides the shared ones) | per-step state | check rows | what it does |",
            "|---|---|---|---|---|---|"]
    losses = BUILTIN_LOSSES if builtin_only else tuple(loss_entries().values())
    samplers = BUILTIN_SAMPLERS if builtin_only else tuple(sampler_entries().values())
    for kind, entries, base in (("loss", losses, s.LossSettings), ("sampler", samplers, s.SamplerSettings)):
        for entry in entries:
            own = [f"`{key}`" for key in entry.settings.model_fields if key not in base.model_fields]
            state = getattr(entry, "state", None)
            state = f"`{state.rsplit(':', 1)[-1]}`" if isinstance(state, str) else ("—" if state is None else "yes")
            rows.append(f"| {kind} | `{entry.name}` | {', '.join(own) or '—'} | {state} | "
                        f"{', '.join(row.dimension for row in entry.check_rows()) or '—'} | {entry.summary} |")
    return "\n".join(rows)


def other_fields(models: Sequence[type[BaseModel]]) -> dict[str, tuple[set[str], dict[str, Any]]]:
    """field → (the names of the models that declare it, their defaults): what an old flat block may carry."""
    out: dict[str, tuple[set[str], dict[str, Any]]] = {}
    for model in models:
        name = model.model_fields["name"].default
        for key, info in model.model_fields.items():
            names, defaults = out.setdefault(key, (set(), {}))
            names.add(name)
            defaults[name] = info.default
    return out


__all__ = ["BUILTIN_LOSSES", "BUILTIN_SAMPLERS", "CheckRow", "Derived", "LOSS_GROUP", "LossEntry", "SAMPLER_GROUP",
           "SamplerEntry", "labels", "loss_entries", "loss_entry", "resolve", "sampler_entries",
           "sampler_entry", "sampler_function"]
