"""What a trial writes and reports, named once: checkpoint file names and the final report's keys.

The study layer (`study/`) reads these names back (MLflow artifacts, resume markers, reports), so
they live here, below it, and are imported there; nothing else spells them.
"""
from __future__ import annotations

# Files inside a checkpoint directory.
TRAIN_STATE = "train_state.pt"          # student + optimizer + scheduler + step + rank table
STUDENT_DIR = "student"                 # final checkpoint: BiEncoder.save (plain transformers folder)
PER_QUERY = "per_query.json"            # final checkpoint: {metric_key: {qid: value}}
TRIAL_CONFIG = "trial_config.yaml"      # final checkpoint (and beside the checkpoints): the TrialConfig
FINAL_METRICS = "final_metrics.json"    # final checkpoint: the final report; marks a finished trial
TRAIN_LOG = "train_log.jsonl"           # beside the checkpoints: every report of rank 0, one JSON per line

# Keys of the trial's reports.
FINAL_LOSS = "train/loss_final"         # only the final report carries it: marks a finished trial's result
RESUMED_FROM = "train/resumed_from_step"
TRAIN_SECONDS = "time/train_s"
EVAL_SECONDS = "time/eval_s"
WORKER_SETUP_SECONDS = "time/worker_setup_s"   # this attempt: model, training set, DDP wrap
CHECKPOINT_SECONDS = "time/checkpoint_s"       # this attempt's intermediate checkpoints
TIME_PREFIX = "time/"
