"""trainables/preflight.py: what a trial touches is checked before the work, in one line and seconds."""
from __future__ import annotations

import time

import pytest

from trainables.config import ConfigError, TrialConfig
from trainables.data.types import DataError
from trainables.models.specs import ModelError
from trainables.preflight import preflight


def config(sample_data, tmp_path, **overrides) -> TrialConfig:
    base = TrialConfig.from_dict({
        "data": {"train": {"id": f"beir:{sample_data / 'scifact_ci'}", "split": "train"}},
        "eval": {"dev": {"id": f"beir:{sample_data / 'scifact_ci'}", "split": "test"}, "beir": []},
        "student": {"model": "tiny:bert"}, "teacher": {"model": "packaged:all-MiniLM-L6-v2"},
        "cache_dir": str(tmp_path / "cache"), "output_dir": str(tmp_path / "runs"),
    })
    return base.with_overrides(overrides)


def test_a_good_config_passes_and_hands_back_the_training_data(sample_data, tmp_path):
    checked = preflight(config(sample_data, tmp_path))
    assert len(checked.train.queries) == 189
    assert [line.split(":")[0] for line in checked.lines()] == ["data.train", "eval.dev"]
    assert not (tmp_path / "cache").exists(), "the checks create nothing"


@pytest.mark.parametrize("override, error, message", [
    ({"student.model": "packaged:nope"}, ModelError, r"^t\.yaml: student\.model: unknown model spec 'packaged:nope'"),
    ({"teacher.model": "./no/such/model"}, ModelError, r"^t\.yaml: teacher\.model: model folder .* does not exist"),
    ({"eval.dev": {"id": "beir:/no/such/folder", "split": "test"}}, DataError, r"^t\.yaml: eval\.dev: .*no such folder"),
    ({"data.train": {"id": "irds:not/a/dataset"}}, DataError, r"^t\.yaml: data\.train: unknown ir_datasets id"),
    ({"teacher.scores_file": "/no/scores.tsv"}, ConfigError, r"^t\.yaml: teacher\.scores_file: /no/scores\.tsv: no such file"),
    ({"data.candidates_file": "/no/run.trec"}, ConfigError, r"^t\.yaml: data\.candidates_file: /no/run\.trec: no such"),
])
def test_the_first_problem_is_one_line_naming_the_key(sample_data, tmp_path, override, error, message):
    started = time.perf_counter()
    with pytest.raises(error, match=message) as caught:
        preflight(config(sample_data, tmp_path, **override), source="t.yaml")
    assert "\n" not in str(caught.value)
    assert time.perf_counter() - started < 3.0


def test_an_output_folder_under_a_file_is_refused(sample_data, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"output_dir: .*file/runs is not a folder"):
        preflight(config(sample_data, tmp_path, output_dir=str(tmp_path / "file" / "runs")))
