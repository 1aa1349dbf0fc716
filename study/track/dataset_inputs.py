"""What a trial was trained and evaluated on, as MLflow dataset inputs: the runs table's Dataset column.

One record per data set, each with a content digest (the same contents give the same digest, on any
machine and in any study):
- the training set, context "training": digest = the shared assets' content key of the TrainingSet
  the trials read (trainables/prepare/assets.py: data fingerprint, training-query subset, pools, teacher
  scores), so two trials share it exactly when they distil from the same teacher scores; the data
  fingerprint, pool and teacher keys are in its source;
- each evaluation set, context "evaluation": digest = its data fingerprint (trainables/data: a sha256
  over its files' contents for `beir:`, its queries and qrels for `irds:`, its generator for the
  quickstart), named by its role (`dev:`, `beir:`, `dl:`) and label; in subset mode, the fingerprint
  of the trial's seeded sub-corpus, named with the metric keys' `_subset<N>` suffix.

Records are plain dicts: the driver builds them once from the preflight (`kd-study run`), the study
state keeps them for `kd-study resume`, and the trial-runs callback, pickled with the Tuner, logs them.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from trainables.config import TrialConfig
from trainables.outputs import eval_set_refs

TRAINING, EVALUATION = "training", "evaluation"      # MLflow's context values (mlflow.data.context)
SOURCE_TYPE = "kd-study"
DIGEST_CHARS = 16                                    # as the asset cache keys; MLflow allows 36


def dataset_records(cfg: TrialConfig, fingerprints: Mapping[str, str], asset_keys: Mapping[str, str],
                    stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The training set and every evaluation set of `cfg`, as dataset records.

    `fingerprints`: the data fingerprint of each evaluation set, by `ref_key(ref)` (the preflight's);
    `asset_keys`/`stats`: the study's shared assets (`AssetsRecord`).
    """
    train, training_set = cfg.data.train, asset_keys.get("training_set")
    records = [] if training_set is None else [{   # no key: assets without a built training set
        "name": train.label, "digest": training_set[:DIGEST_CHARS], "context": TRAINING,
        "ref": ref_key(train),
        "source": {"id": train.id, "split": train.split, "data_fingerprint": asset_keys.get("data"),
                   "pools": asset_keys.get("pools"), "teacher": asset_keys.get("teacher"),
                   "training_set": training_set},
        "profile": {"training_queries": stats.get("n_train_queries"), "pool_depth": cfg.data.pool_depth},
    }]
    for kind, ref in eval_set_refs(cfg.eval):
        fingerprint = fingerprints.get(ref_key(ref))
        if fingerprint is None:
            continue
        records.append({
            "name": f"{kind}:{ref.label}", "digest": fingerprint[:DIGEST_CHARS], "context": EVALUATION,
            "ref": ref_key(ref), "source": {"id": ref.id, "split": ref.split, "fingerprint": fingerprint},
            "profile": {},
        })
    return records


def ref_key(ref) -> str:
    """A data set reference (trainables.config.DatasetRef) as a stable string: what records are matched by."""
    return json.dumps(ref.model_dump(mode="json"), sort_keys=True)


def trial_records(records: Iterable[Mapping[str, Any]], cfg: TrialConfig) -> list[Mapping[str, Any]]:
    """The records of the sets `cfg` trains and evaluates on (a searched evaluation set may differ from the base's).

    With `eval.subset_distractors` a trial evaluates on a seeded sub-corpus (trainables.data.subset):
    its evaluation records then name and digest that subset, as its metric keys do (`_subset<N>`).
    """
    from trainables.data.subset import subset_fingerprint

    wanted = {ref_key(cfg.data.train)} | {ref_key(ref) for _, ref in eval_set_refs(cfg.eval)}
    chosen = []
    for record in records:
        if record["ref"] not in wanted:
            continue
        n = cfg.eval.subset_distractors
        if record["context"] == EVALUATION and n is not None:
            fingerprint = subset_fingerprint(record["source"]["fingerprint"], n, cfg.seed)
            record = {**record, "name": record["name"] + cfg.eval.metric_suffix, "digest": fingerprint[:DIGEST_CHARS],
                      "source": {**record["source"], "subset_fingerprint": fingerprint, "subset_distractors": n,
                                 "subset_seed": cfg.seed}}
        chosen.append(record)
    return chosen


def log_dataset_inputs(mlflow_client, run_id: str, records: Iterable[Mapping[str, Any]]) -> None:
    """Log `records` as the run's dataset inputs, each tagged with its context (training or evaluation)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = [DatasetInput(Dataset(name=r["name"], digest=r["digest"], source_type=SOURCE_TYPE,
                                   source=json.dumps(r["source"], sort_keys=True),
                                   profile=json.dumps(r["profile"], sort_keys=True)),
                           tags=[InputTag(MLFLOW_DATASET_CONTEXT, r["context"])]) for r in records]
    if inputs:
        mlflow_client.log_inputs(run_id, datasets=inputs)
