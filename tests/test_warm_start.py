"""init: {from: warmup}: one warmed-up student per study, built once, reused by every trial, loaded by the trial."""
from __future__ import annotations

import pytest
import torch

from trainables.prepare.assets import prepare_assets
from trainables.config import TrialConfig
from trainables.errors import CheckpointError
from trainables.models.student import BiEncoder
from trainables.train.warm_start import load_warm_start, prepare_warm_start, warm_start_key


def _trial(sample_data, cache_dir, **overrides) -> TrialConfig:
    return TrialConfig.from_dict({
        "data": {"train": {"id": f"beir:{sample_data / 'scifact_ci'}", "split": "test"},
                 "pool_depth": 10, "max_train_queries": 6},
        "student": {"model": "tiny:bert", "num_layers": 1, "query_max_length": 16, "passage_max_length": 32},
        "teacher": {"model": "tiny:bert", "query_max_length": 16, "passage_max_length": 32},
        "init": {"from": "warmup", "warmup": {"steps": 3, "batch_size": 3, "lr": 1e-3, "sampler": {"k": 4}}},
        "sampler": {"k": 4},
        "cache_dir": str(cache_dir),
    }).with_overrides(overrides)


@pytest.mark.slow
def test_the_warm_start_is_built_once_and_reused_by_a_second_trial(tmp_path):
    from test_epoch_plan import multi_positive_set

    training_set = tmp_path / "trainsets" / "0123456789abcdef.npz"    # its name is its content key
    multi_positive_set(12).save(training_set)
    base = TrialConfig.from_dict({
        "student": {"model": "tiny:bert", "num_layers": 1, "query_max_length": 8, "passage_max_length": 8},
        "data": {"pool_depth": 6, "max_positives": 2}, "sampler": {"k": 4},
        "init": {"from": "warmup", "warmup": {"steps": 3, "batch_size": 4, "lr": 1e-3, "sampler": {"k": 4}}},
        "cache_dir": str(tmp_path)})
    first = prepare_warm_start(base, training_set)                    # the study's asset step
    assert first.stats["warm_start_cache_status"] == "miss" and first.stats["warm_start_steps_trained"] == 3

    # Two trials that differ in what they search (loss, seed, sampler, their own lr) find the same warm start.
    for trial in (base.with_overrides({"loss.name": "wkl", "loss.gamma1": 2.0, "seed": 1}),
                  base.with_overrides({"sampler.name": "topk", "optim.lr": 1e-5})):
        warm = prepare_warm_start(trial, training_set)
        assert (warm.key, warm.path) == (first.key, first.path)
        assert warm.stats == {"warm_start_steps_trained": 0, "warm_start_cache_status": "hit"}

    # The shipped recipe's warm-up: KL plus in-batch negatives (loss.in_batch_weight) trains too.
    in_batch = base.with_overrides({"init.warmup.loss": {"name": "kl", "in_batch_weight": 1.0}})
    assert prepare_warm_start(in_batch, training_set).stats["warm_start_steps_trained"] == 3

    # What the warm-up does is part of its key: another warm-up is another asset.
    longer = base.with_overrides({"init.warmup.steps": 4})
    assert warm_start_key(longer, training_set) != first.key
    other = "fp32" if base.resources.precision != "fp32" else "bf16"   # the precision it trains at, too
    assert warm_start_key(base.with_overrides({"resources.precision": other}), training_set) != first.key
    assert prepare_warm_start(longer, training_set).stats["warm_start_steps_trained"] == 4

    # The trial's student loads exactly the warmed-up weights (and they moved from the pretrained ones).
    pretrained = BiEncoder.from_config(base.student, base.cache_dir)
    student = BiEncoder.from_config(base.student, base.cache_dir)
    load_warm_start(student, first.path)
    saved = torch.load(first.path, weights_only=True)
    assert all(torch.equal(student.state_dict()[k], v) for k, v in saved.items())
    assert any(not torch.equal(pretrained.state_dict()[k], v) for k, v in saved.items())

    # A truncated file is refused when loaded and rebuilt when prepared again.
    path = tmp_path / "warm_start" / f"{first.key}.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="warm start missing or corrupt"):
        load_warm_start(student, path)
    assert prepare_warm_start(base, training_set).stats["warm_start_cache_status"] == "corrupt"


@pytest.mark.slow
def test_a_trial_from_public_scores_converted_to_parquet_refines_the_warm_start_with_zero_teacher_passes(
        ray_local, sample_data, tmp_path, monkeypatch):
    """The WKL protocol end to end: published scores (a 1M-pair {qid: {pid: score}} pickle, gzipped, converted
    once by `kd-study convert-scores`), teacher-ranked candidates sampled from the teacher's top N, every
    positive in the list, one shared warm start."""
    import numpy as np

    from test_scores_parquet import convert, public_pickle
    from trainables.models import teacher as teacher_module
    from trainables.data import load_data
    from trainables.train.trial import run_trial

    folder = sample_data / "scifact_ci"
    data = load_data(f"beir:{folder}", "train")
    rng = np.random.default_rng(0)
    doc_ids = [int(d) for d, _ in data.corpus]
    published = {int(q): dict(zip(doc_ids, rng.normal(size=len(doc_ids)).tolist())) for q in data.queries}
    assert public_pickle(tmp_path / "ce-scores.pkl.gz", published, 1_000_000) >= 1_000_000
    scores_file = tmp_path / "ce-scores.parquet"
    convert(tmp_path / "ce-scores.pkl.gz", scores_file)

    def no_teacher(*args, **kwargs):
        raise AssertionError("a teacher model was built although the scores come from a file")

    monkeypatch.setattr(teacher_module, "build_teacher", no_teacher)
    cfg = _trial(sample_data, tmp_path / "cache").with_overrides({
        "name": "from-file",
        "data.train": {"id": f"beir:{folder}", "split": "train"},
        "data.max_train_queries": 4, "data.max_positives": 3,
        "data.pool_source": "teacher", "data.first_stage_depth": 20, "data.pool_depth": 10,
        "teacher.scores_file": str(scores_file),
        "sampler.name": "teacher_top_n", "sampler.top_n": 6, "sampler.k": 3,
        "loss.name": "wkl", "loss.gamma1": 1.0,
        "optim.lr": 1e-12, "optim.max_steps": 2, "optim.batch_size": 2, "optim.weight_decay": 0.0,
        "eval.dev": None, "eval.beir": [{"id": f"beir:{folder}", "split": "test"}],
        "eval.subset_distractors": 20, "eval.top_k": 10,
        "resources.num_workers": 1,
    })
    assets = prepare_assets(cfg, progress=False)
    assert assets.stats["teacher_forward_passes"] == 0 and assets.stats["teacher_pairs_scored"] == 0
    assert assets.stats["teacher_pairs_read"] > 0 and assets.stats["warm_start_steps_trained"] == 3

    assert assets.stats["teacher_cache_status"] == "miss"
    assert prepare_assets(cfg, progress=False).stats["warm_start_cache_status"] == "hit"   # a second preparation

    result = run_trial(cfg, assets, storage_path=str(tmp_path / "runs"), name="from-file")
    assert result.metrics["step"] == 2
    # At lr 1e-12 the trial's final student is its starting point: the shared warm start.
    trained = BiEncoder.load(result.student_dir).state_dict()
    warm = torch.load(tmp_path / "cache" / "warm_start" / f"{assets.keys['warm_start']}.pt", weights_only=True)
    for name, tensor in warm.items():
        torch.testing.assert_close(trained[name], tensor, atol=1e-6, rtol=0)
