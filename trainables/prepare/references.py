"""A study's reference points: the untrained student and the teacher on the selection (dev) set.

A learning curve means little without its floor and ceiling: a trial whose student ends below the
untrained one has unlearned, and the teacher bounds what distillation can reach. Both are
evaluated once per study, on exactly the set and subset the trials' curves use, and cached by
content like the other shared assets:

    cache_dir/references/<key>.json     {reference_key(role, metric key): value}  (+ .sha256 sidecar)

Checksummed like the `.npz` assets (training_set.write_checksummed / is_complete): the values go
straight into the parent run's `reference/...` metrics and the report, so a changed or partial
file is re-evaluated, never reported.

key = hash(student and teacher configs and weights, the dev set, subset size, depth, index, seed).
A cross-encoder teacher cannot retrieve on its own, so only the untrained student is a reference then.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from trainables.config import TrialConfig
from trainables.outputs import reference_key
from trainables.data.training_set import content_key, is_complete, write_checksummed

log = logging.getLogger(__name__)

REFERENCES_VERSION = 1


def reference_metrics(cfg: TrialConfig, progress: bool = False) -> dict[str, float]:
    """{`reference/<role>/<dev metric key>`: value} for the untrained student and a bi-encoder teacher; {} without dev."""
    if cfg.eval.dev is None:
        return {}
    from trainables.prepare.assets import entry_lock, model_identity

    dev_only = cfg.eval.model_copy(update={"beir": [], "dl": []})
    key = content_key("references", REFERENCES_VERSION, cfg.student.model_dump(), model_identity(cfg.student),
                      cfg.teacher.model_dump(exclude={"batch_size"}), model_identity(cfg.teacher),
                      dev_only.model_dump(mode="json", exclude={"every_steps", "at_fractions", "batch_size"}),
                      cfg.seed)
    path = Path(cfg.cache_dir) / "references" / f"{key}.json"
    with entry_lock(path):
        cached = _read_checked(path)
        if cached is not None:
            return cached
        values = _evaluate_references(cfg, dev_only, progress)
        write_checksummed(path, lambda tmp: tmp.write_text(json.dumps(values, indent=1)), suffix=".tmp.json")
    return values


def _read_checked(path: Path) -> dict[str, float] | None:
    """The cached references, or None when absent, or when the file fails its checksum or does not hold
    finite numbers (logged): a tampered or half-written file is re-evaluated, never reported."""
    if not path.exists():
        return None
    if not is_complete(path):
        log.warning("%s: corrupt or changed (checksum mismatch or missing sidecar); re-evaluating", path)
        return None
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.warning("%s: unreadable (%s); re-evaluating", path, error)
        return None
    if not isinstance(values, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values.values()):
        log.warning("%s: not a mapping of finite numbers; re-evaluating", path)
        return None
    return values


def _evaluate_references(cfg: TrialConfig, dev_only, progress: bool) -> dict[str, float]:
    from trainables.evaluate.evaluation import evaluate_student
    from trainables.models.student import BiEncoder

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"   # a GPU host encodes the corpus there, as trials do
    models = {"untrained": cfg.student}
    if cfg.teacher.kind == "bi_encoder":
        models["teacher"] = cfg.teacher
    values: dict[str, float] = {}
    for role, model_cfg in models.items():
        # The trial's own seed: the untrained student is exactly step 0 of a trial with this config.
        encoder = BiEncoder.from_config(model_cfg, cfg.cache_dir)
        encoder.model.to(device)
        result = evaluate_student(encoder, dev_only, cfg.seed, progress=progress)
        values.update({reference_key(role, k): v for k, v in result.metrics.items()})
    return values
