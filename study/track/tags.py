"""The MLflow names a study writes and reads back, written once: tags, artifact names, derived metrics.

`study.track.tracking` and `study.track.trial_runs` write them, `study.report` and `study.report.export` read them; the
checkpoint files they mirror are named in `trainables.outputs`.
"""
from __future__ import annotations

from trainables import outputs

# Tags.
STUDY_NAME_TAG = "kd_study.name"
STUDY_KIND_TAG = "kd_study.kind"                   # "study" (the parent run), "point" or "trial"
TRIAL_ID_TAG = "kd_study.trial_id"
STATE_TAG = "kd_study.state"                       # "pruned" on a trial the scheduler stopped early
ERROR_TAG = "kd_study.error"
ENDED_BY_TAG = "kd_study.ended_by"                 # why a run was closed by another command than its driver
SEARCHED_TAG = "kd_study.searched"
MISSING_ARTIFACTS_TAG = "kd_study.missing_artifacts"
CHECKPOINT_TAG = "kd_study.checkpoint"
POINT_TAG = "kd_study.point"                       # replicates: the configuration point a seed run belongs to
REPLICATE_TAG = "kd_study.replicate"               # replicates: 0..N-1, the seed index within its point
GIT_SHA_TAG = "kd_study.git_sha"
STUDY_DIR_TAG = "kd_study.study_dir"
ALGORITHM_TAG = "kd_study.algorithm"
METRIC_TAG = "kd_study.metric"
ASSET_TAG_PREFIX = "kd_study.asset."
STUDY_RUN_TAG = "kd_study.study_run"               # the study's parent run id, on point and seed runs
CONFIRMS_TAG = "kd_study.confirms"                 # on a confirmation study's parent run: the study it confirms
PARENT_RUN_TAG = "mlflow.parentRunId"              # MLflow's own: the UI nests a run under it
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"      # read by MLflow 3's UI to pick the default view
MODEL_TRAINING_KIND = "custom_model_development"
# Contract tags that stand in for params a tracker did not log (param → tag).
TAG_FALLBACKS = {"loss.name": "loss", "sampler.name": "sampler", "sampler.k": "k"}

# Artifacts of a trial run (the names of the trial's own checkpoint files).
TRIAL_CONFIG_ARTIFACT = outputs.TRIAL_CONFIG
PER_QUERY_ARTIFACT = outputs.PER_QUERY
STUDENT_ARTIFACT_DIR = outputs.STUDENT_DIR
RUNS_ARTIFACT_DIR = outputs.RUNS_DIR                 # one TREC run file per evaluation set
REPORT_ARTIFACT_DIR = "report"                     # on the parent run
CONFIRM_ARTIFACT_DIR = "confirm"                   # on the parent run: kd-study confirm's tables

# Metrics the study layer derives from a trial run.
WALL_METRIC = "time/trial_wall_s"        # MLflow run start → end: the Tune trial, Ray Train start-up included
OVERHEAD_METRIC = "time/overhead_s"      # wall − train − eval: Ray, MLflow, model loading, checkpoints

# Read back from the parent run by the report and export.
STUDY_KIND = "study"                     # STUDY_KIND_TAG of the parent run
TRIAL_KIND = "trial"                     # STUDY_KIND_TAG of a trial run (with replicates: a seed run)
POINT_KIND = "point"                     # STUDY_KIND_TAG of a point run: its seed runs nest under it
# Metrics of a point run (study.replicates > 1): each final metric's mean over the seeds under its own
# key, and these beside it (95% bootstrap interval over queries and seeds; n).
CI_LOW_SUFFIX = "/ci95_low"
CI_HIGH_SUFFIX = "/ci95_high"
POINT_SEEDS_METRIC = "point/n_seeds"
POINT_QUERIES_METRIC = "point/n_queries"
# STATE_TAG values of a trial run (the parent run gets STATE_INTERRUPTED when its driver was lost).
STATE_RESUMED, STATE_FAILED, STATE_PRUNED, STATE_FINISHED = "resumed", "failed", "pruned", "finished"
STATE_INTERRUPTED = "interrupted"
# The space file's `study:` block, logged as `study.<field>` params; objectives as JSON ([{metric, mode}]).
STUDY_METRIC_PARAM = "study.metric"
STUDY_MODE_PARAM = "study.mode"
STUDY_OBJECTIVES_PARAM = "study.objectives"
STUDY_BASELINE_PARAM = "study.baseline"     # JSON {dotted key: value}: the configuration every cell is compared with
STUDY_CONTRASTS_PARAM = "study.contrasts"   # JSON [{name, of, vs, within, family}]: the declared contrasts
BEST_CONFIG_ARTIFACT = "best_config.yaml"   # on the parent run: the best trial's config (kd-study export)
