"""What a trial writes and reports, named once: checkpoint file names, report keys and final metric keys.

The study layer (`study/`) reads these names back (MLflow artifacts, resume markers, reports), so
they live here, below it, and are imported there; nothing else spells them. Light to import (no
torch, faiss or ir_measures): the study's processes import it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from trainables.config import DatasetRef, EvalConfig

# Files inside a checkpoint directory.
TRAIN_STATE = "train_state.pt"          # student + optimizer + scheduler + step + rank table
STUDENT_DIR = "student"                 # final checkpoint: BiEncoder.save (plain transformers folder)
PER_QUERY = "per_query.json"            # final checkpoint: {metric_key: {qid: value}}
TRIAL_CONFIG = "trial_config.yaml"      # final checkpoint (and beside the checkpoints): the TrialConfig
FINAL_METRICS = "final_metrics.json"    # final checkpoint: the final report; marks a finished trial
RUNS_DIR = "runs"                       # final checkpoint: one TREC run file per evaluation set
TRAIN_LOG = "train_log.jsonl"           # beside the checkpoints: every report of rank 0, one JSON per line
LEASE = "lease.json"                    # beside the checkpoints: the run writing this folder now (checkpoints.TrialLease)

# Keys of the trial's reports.
FINAL_LOSS = "train/loss_final"         # only the final report carries it: marks a finished trial's result
RESUMED_FROM = "train/resumed_from_step"
TRAIN_LOSS = "train/loss"               # mean loss over the queries since the last log
LEARNING_RATE = "train/lr"
SAMPLED_SCORE_VARIANCE = "train/sampled_score_variance"   # mean per-query variance of the sampled teacher scores
SAMPLED_SCORE_ENTROPY = "train/sampled_score_entropy"     # mean per-query entropy at the loss's teacher temperature
QUERIES_PER_SECOND = "train/queries_per_s"
TRAIN_SECONDS = "time/train_s"
EVAL_SECONDS = "time/eval_s"                   # every evaluation of the trial: the final one and the curve points
WORKER_SETUP_SECONDS = "time/worker_setup_s"   # this attempt: model, training set, DDP wrap
CHECKPOINT_SECONDS = "time/checkpoint_s"       # this attempt's intermediate checkpoints
TIME_PREFIX = "time/"

# Evaluation metrics (science.md §3): the measures of each kind of evaluation set, by name;
# trainables/evaluate/evaluation.py maps each name to its ir_measures measure.
DEV_MEASURE_NAMES = ("mrr_at_10", "ndcg_at_10", "recall_at_1000")
BEIR_MEASURE_NAMES = ("ndcg_at_10", "mrr_at_10")
DL_MEASURE_NAMES = ("ndcg_at_10", "mrr_at_10", "recall_at_1000")
BEIR_AVERAGED_MEASURE = "ndcg_at_10"    # also reported as its mean over the BEIR sets
MEASURE_NAMES = {"dev": DEV_MEASURE_NAMES, "beir": BEIR_MEASURE_NAMES, "dl": DL_MEASURE_NAMES}


def eval_set_refs(eval_cfg: EvalConfig) -> Iterator[tuple[str, DatasetRef]]:
    """(kind, ref) of every configured evaluation set in report order: dev, then BEIR, then DL."""
    if eval_cfg.dev is not None:
        yield "dev", eval_cfg.dev
    for ref in eval_cfg.beir:
        yield "beir", ref
    for ref in eval_cfg.dl:
        yield "dl", ref


def set_metric_keys(kind: str, label: str, suffix: str = "") -> dict[str, str]:
    """{measure name: metric key} of one evaluation set, e.g. `beir/scifact/ndcg_at_10` (+ subset suffix)."""
    prefix = {"dev": "dev_", "beir": f"beir/{label}/", "dl": f"{label}_"}[kind]
    return {name: f"{prefix}{name}{suffix}" for name in MEASURE_NAMES[kind]}


def beir_average_key(suffix: str = "") -> str:
    """The key of the mean of `BEIR_AVERAGED_MEASURE` over the BEIR sets."""
    return f"beir_{BEIR_AVERAGED_MEASURE}_avg{suffix}"


# The papers' headline metrics: Dev MRR@10 (in domain) and nDCG@10 averaged over the BEIR sets.
DEV_MRR_AT_10 = set_metric_keys("dev", "dev")["mrr_at_10"]
BEIR_NDCG_AT_10_AVG = beir_average_key()


def eval_metric_keys(eval_cfg: EvalConfig) -> list[str]:
    """Every metric key `evaluate_student` reports for `eval_cfg` (`eval_cfg.metric_suffix` in subset mode)."""
    suffix = eval_cfg.metric_suffix
    keys = [key for kind, ref in eval_set_refs(eval_cfg) for key in set_metric_keys(kind, ref.label, suffix).values()]
    return keys + [beir_average_key(suffix)] if eval_cfg.beir else keys


def final_metric_keys(eval_cfg: EvalConfig) -> list[str]:
    """The metrics a finished trial's final report carries that a study can rank trials by.

    With a selection (dev) set, also the best value of its learning curve (`curve_best_key`), so a
    sweep can select on the final student or on the best point of its training.
    """
    curve = curve_metric_key(eval_cfg)
    return [*eval_metric_keys(eval_cfg), *([curve_best_key(curve)] if curve else []), FINAL_LOSS]


# Learning curves (eval.at_fractions): the selection (dev) set is evaluated at those fractions of the
# budget; its RR@10 is the curve a report draws and the value whose best point a trial reports.
CURVE_MEASURE = "mrr_at_10"
BEST_SUFFIX = "_best"       # `<curve metric>_best`: the best curve point's value (final point included)
BEST_STEP = "best_step"     # the step of that point (ties: the earliest)


def curve_metric_key(eval_cfg: EvalConfig) -> str | None:
    """The learning-curve metric of `eval_cfg`, e.g. `dev_mrr_at_10_subset500`; None without a dev set.

    The curve is what the intermediate points measure (`EvalConfig.at_intermediate`).
    """
    if eval_cfg.dev is None:
        return None
    return set_metric_keys("dev", eval_cfg.dev.label, eval_cfg.at_intermediate().metric_suffix)[CURVE_MEASURE]


def curve_best_key(metric_key: str) -> str:
    """`<metric_key>_best`: the best point of that metric's learning curve."""
    return metric_key + BEST_SUFFIX


# Reference points of a study (study/references.py): the untrained student and the teacher evaluated
# on the selection set, logged on the study's parent run as `reference/<role>/<metric key>`.
REFERENCE_ROLES = ("untrained", "teacher")


def reference_key(role: str, metric_key: str) -> str:
    """`reference/untrained/dev_mrr_at_10`: a reference model's value of one metric."""
    return f"reference/{role}/{metric_key}"


# Inside a trial's run folder (beside its checkpoints): where rank 0 writes a checkpoint before
# `ray.train.report` copies it into place; emptied after each copy.
STAGING_DIR = ".checkpoint-staging"



def run_file_name(set_name: str) -> str:
    """The TREC run file of one evaluation set in `RUNS_DIR`: `dev.trec.gz`, `beir_scifact.trec.gz`, ...

    Gzipped: a top-1000 run of a few hundred queries is ~20 MB of text per set and trial.
    """
    return set_name.replace("/", "_") + ".trec.gz"
