"""trainables/prepare/references.py: the study's reference points are cached checksummed, like the `.npz` assets (issue 27)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from trainables.config import TrialConfig


@pytest.fixture
def evaluations(monkeypatch) -> list[int]:
    """Each evaluation of the references (the models' part, minutes on a real set) as a count and fixed values."""
    from trainables.prepare import references

    calls: list[int] = []

    def evaluate(cfg, dev_only, progress):
        calls.append(1)
        return {"reference/teacher/dev_mrr_at_10": 0.409, "reference/untrained/dev_mrr_at_10": 0.2}

    monkeypatch.setattr(references, "_evaluate_references", evaluate)
    return calls


def cached(cache: Path) -> Path:
    (path,) = (cache / "references").glob("*.json")
    return path


def test_a_changed_references_file_is_re_evaluated_never_reported(tmp_path, evaluations, caplog):
    from trainables.prepare.references import reference_metrics

    cfg = TrialConfig.from_dict({"cache_dir": str(tmp_path / "cache")})
    first = reference_metrics(cfg)
    assert reference_metrics(cfg) == first and len(evaluations) == 1   # a hit: not evaluated again
    path = cached(tmp_path / "cache")
    assert path.with_suffix(".sha256").is_file()

    path.write_text(path.read_text().replace("0.409", "0.909"))   # the teacher's 0.409 made 0.909
    with caplog.at_level(logging.WARNING, logger="trainables.prepare.references"):
        again = reference_metrics(cfg)
    assert again["reference/teacher/dev_mrr_at_10"] == 0.409 and len(evaluations) == 2
    assert "checksum mismatch" in caplog.text
    assert json.loads(path.read_text()) == first   # rebuilt, with its checksum
    assert reference_metrics(cfg) == first and len(evaluations) == 2


@pytest.mark.parametrize("damage", ["no sidecar", "half written", "not numbers"])
def test_a_references_file_without_a_valid_checksum_or_numbers_is_re_evaluated(tmp_path, evaluations, damage):
    from trainables.prepare.references import reference_metrics
    from trainables.data.training_set import write_checksummed

    cfg = TrialConfig.from_dict({"cache_dir": str(tmp_path / "cache")})
    reference_metrics(cfg)
    path = cached(tmp_path / "cache")
    if damage == "no sidecar":
        path.with_suffix(".sha256").unlink()
    elif damage == "half written":
        path.write_text(path.read_text()[:20])
    else:   # a consistent checksum over values that are no metric
        write_checksummed(path, lambda tmp: tmp.write_text(json.dumps({"reference/teacher/dev_mrr_at_10": "NaN"})))
    assert reference_metrics(cfg)["reference/teacher/dev_mrr_at_10"] == 0.409 and len(evaluations) == 2
