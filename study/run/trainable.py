"""The study's Tune trainable: one trial's searched values → one distillation run (Ray Train).

Runs in a Tune trial actor, so it imports only what a trial needs (no asset builders: they pull in
transformers and faiss, seconds per trial). The driver side (resources, Tuner) is study.run.tuner.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from study.space.schema import SearchSpace
from study.track.tracking import trial_name

RESULT_MARKER = "kd_study_result.json"   # trials/<trial_id>/: a finished trial's final report


def distil_trial(config: dict[str, Any], *, space: SearchSpace, training_set_path: str,
                 asset_keys: dict[str, str], trials_dir: str, hooks: Any = None) -> None:
    """Tune function trainable: one trial's config (searched values) → one Ray Train run.

    Runs in a Tune actor that holds no CPU (`with_resources({"memory": 1})`): the TorchTrainer's
    workers hold the trial's CPUs. A trial whose result marker exists (it finished before the driver
    was killed) re-reports that result instead of training again. `hooks`: a test's `TrainHooks`
    (`StudyOptions.hooks`), each trial's own by `TrainHooks.only`.
    """
    from ray import tune
    # Ray's key for the checkpoint folder in the reports TuneReportCallback forwards; the replayed
    # final report carries it too (study.track.trial_runs logs that checkpoint's files).
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

    from trainables.disk import writing
    from trainables.train.trial import run_trial
    from trainables.data.training_set import Assets  # not trainables.prepare.assets: its builders import transformers

    trial_id = tune.get_context().get_trial_id()
    marker = Path(trials_dir, trial_id, RESULT_MARKER)
    if marker.is_file():
        tune.report(json.loads(marker.read_text()))
        return
    cfg = space.trial_config(config, name=trial_name(space.name, trial_id))
    with writing(Path(trials_dir, trial_id)):   # its folder, lease, checkpoints, marker: a full disk names the file
        result = run_trial(cfg, Assets(training_set_path, dict(asset_keys)), storage_path=trials_dir, name=trial_id,
                           callbacks=[TuneReportCallback()], hooks=hooks)
        final = {**result.metrics, CHECKPOINT_PATH_KEY: result.checkpoint_path}
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(final, default=float))
        os.replace(tmp, marker)
