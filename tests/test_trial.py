"""trainables/train/trial.py + train_loop.py (and the modules it drives): a real distillation trial under
Ray Train (2 DDP workers, gloo).

Small on purpose (2 shared CPU cores): a tiny random BERT student, 32 SciFact training queries with
20-candidate pools, short max lengths, and evaluation on scifact_ci's judged docs + 200 distractors.
"""
from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest

from trainables.config import TrialConfig
from trainables.models.student import BiEncoder
from trainables.train.trial import read_train_log, run_trial

pytestmark = pytest.mark.slow

EVAL_KEYS = ("beir/scifact_ci/ndcg_at_10_subset200", "beir_ndcg_at_10_avg_subset200")


def trial_config(sample_data: Path, cache_dir: Path, **overrides) -> TrialConfig:
    base = TrialConfig.from_dict({
        "name": "test-trial",
        "data": {"train": {"id": f"beir:{sample_data / 'scifact_ci'}", "split": "train"},
                 "pool_depth": 20, "max_train_queries": 32},
        "teacher": {"model": "packaged:all-MiniLM-L6-v2", "query_max_length": 16, "passage_max_length": 64},
        "student": {"model": "tiny:bert", "query_max_length": 16, "passage_max_length": 64},
        "sampler": {"name": "stratified", "k": 4},
        # Cosine scores lie in [-1, 1]: temperature 0.05 makes both distributions peaked enough
        # for the KL to carry a clear signal within a few steps.
        "loss": {"teacher_temperature": 0.05, "student_temperature": 0.05},
        "optim": {"lr": 2e-3, "batch_size": 8, "epochs": 5, "log_every_steps": 4, "warmup_ratio": 0.1},
        "eval": {"dev": None, "beir": [{"id": f"beir:{sample_data / 'scifact_ci'}", "split": "test"}],
                 "subset_distractors": 200, "batch_size": 64},
        "resources": {"num_workers": 2, "cpus_per_worker": 1},
        "cache_dir": str(cache_dir),
    })
    return base.with_overrides(overrides)


@pytest.fixture(scope="module")
def assets(sample_data, tmp_path_factory):
    """Pools (tiny student) + teacher scores (packaged MiniLM) for the 32 queries, built once per module."""
    from trainables.prepare.assets import prepare_assets

    cache_dir = tmp_path_factory.mktemp("kd-cache")
    cfg = trial_config(sample_data, cache_dir)
    return cache_dir, prepare_assets(cfg, progress=False)


def test_trial_distils_and_reports_final_metrics(ray_local, sample_data, assets, tmp_path):
    cache_dir, prepared = assets
    cfg = trial_config(sample_data, cache_dir, **{"eval.every_steps": 8})
    started = time.perf_counter()
    result = run_trial(cfg, prepared, storage_path=str(tmp_path / "runs"), name="distil")
    elapsed = time.perf_counter() - started
    print(f"trial with 2 workers, {result.metrics['step']} steps: {elapsed:.1f} s")

    log = [r for r in read_train_log(str(tmp_path / "runs"), "distil") if "train/loss" in r]
    # 32 queries / 8 = 4 steps per epoch × 5 epochs; one report per epoch = every query once.
    assert [r["step"] for r in log] == [4, 8, 12, 16, 20]
    losses = [r["train/loss"] for r in log]
    assert losses[-1] < 0.7 * losses[0], losses      # the student moves toward the teacher
    for record in log:
        assert record["train/queries_per_s"] > 0
        assert record["train/sampled_score_variance"] > 0
    # Intermediate evaluations (what a pruning scheduler reads) at eval.every_steps only.
    assert [r["step"] for r in log if EVAL_KEYS[0] in r] == [8, 16]

    metrics = result.metrics
    assert metrics["step"] == 20 and metrics["train/loss_final"] == pytest.approx(losses[-1])
    for key in EVAL_KEYS:
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["time/train_s"] > 0 and metrics["time/eval_s"] > 0

    # What later stages read: per-query scores for paired tests, a loadable student, the config.
    judged = {line.split("\t")[0] for line in (sample_data / "scifact_ci" / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    assert set(result.per_query[EVAL_KEYS[0]]) == judged
    run_lines = gzip.decompress((Path(result.checkpoint_path) / "runs" / "beir_scifact_ci.trec.gz").read_bytes())
    rows = [line.split() for line in run_lines.decode().splitlines()]   # one TREC run per evaluation set
    assert {row[0] for row in rows} == judged and {row[5] for row in rows} == {cfg.name}
    student = BiEncoder.load(result.student_dir)
    assert student.encode(["a claim about cells"], is_query=True).shape == (1, 32)
    saved = TrialConfig.from_yaml(Path(result.checkpoint_path) / "trial_config.yaml")
    assert saved.optim == cfg.optim and saved.loss == cfg.loss


def test_worker_failure_resumes_from_last_checkpoint(ray_local, sample_data, assets, tmp_path):
    """A worker crash mid-trial is retried from the last checkpoint: same batches, no work lost or redone."""
    from trainables.train.hooks import TrainHooks
    from trainables.train.trial import build_trainer, read_trial_result

    cache_dir, prepared = assets
    cfg = trial_config(sample_data, cache_dir, **{
        "optim.epochs": 3, "optim.log_every_steps": 1, "optim.checkpoint_every_steps": 4,
        # WKL with β refreshes, so the rank table's checkpoint and its all-gather are exercised too.
        "loss.name": "wkl", "loss.gamma1": 2.0, "loss.alpha": 1.0, "loss.beta_refresh_steps": 3,
        "loss.beta_pool_depth": 10,
    })
    marker = tmp_path / "fault-fired"
    trainer = build_trainer(cfg, prepared.training_set_path, storage_path=str(tmp_path / "runs"), name="faulty",
                            max_failures=1, hooks=TrainHooks(fail_once_at_step=7, fail_marker=str(marker)))
    fitted = trainer.fit()
    assert fitted.error is None and marker.exists()
    result = read_trial_result(fitted.checkpoint.path)

    log = [r for r in read_train_log(str(tmp_path / "runs"), "faulty") if "train/loss" in r]
    steps = [r["step"] for r in log]
    # Steps 1-6 ran, step 7 crashed, the retry restarted after the step-4 checkpoint and finished.
    assert steps == [1, 2, 3, 4, 5, 6, 5, 6, 7, 8, 9, 10, 11, 12]
    assert result.metrics["step"] == 12 and result.metrics["train/resumed_from_step"] == 4
    assert result.student_dir is not None
    # The resumed run trains on exactly what the first attempt did (same batches, weights, optimizer
    # state, β ranks, dropout): steps 5 and 6 give the same losses both times.
    first, second = log[4:6], log[6:8]
    for before, after in zip(first, second):
        assert after["train/loss"] == pytest.approx(before["train/loss"], rel=1e-4)
        assert after["train/lr"] == pytest.approx(before["train/lr"])


def test_workers_of_a_run_whose_folder_was_taken_over_write_nothing(ray_local, sample_data, assets, tmp_path):
    """A lost driver's trial that lives on (its workers restarted by Ray Train) must not write beside the
    run that resumed it: the workers check the folder's lease before they touch it."""
    from trainables.train.checkpoints import LEASE_OWNER_KEY, FolderLease
    from trainables.train.trial import build_trainer

    cache_dir, prepared = assets
    cfg = trial_config(sample_data, cache_dir, **{"resources.num_workers": 1, "optim.checkpoint_every_steps": 1})
    run_dir = tmp_path / "runs" / "taken"
    with FolderLease(run_dir) as resumed:            # the run that took the folder over
        (run_dir / ".checkpoint-staging").mkdir()    # what its rank 0 is writing now
        trainer = build_trainer(cfg, prepared.training_set_path, storage_path=str(tmp_path / "runs"), name="taken",
                                max_failures=0, loop_extra={LEASE_OWNER_KEY: "lost-run"})
        with pytest.raises(Exception, match="was taken over by another run"):
            trainer.fit()
        assert (run_dir / ".checkpoint-staging").is_dir()       # left alone
        assert not list(run_dir.glob("step_*")) and not (run_dir / "final").exists()
        assert resumed.owner in (run_dir / "lease.json").read_text()


def test_a_run_folder_recorded_before_a_config_field_existed_is_claimed_with_its_default(tmp_path):
    """Resuming a study started by an older kd-study: its run_config.yaml lacks fields added since (their defaults)."""
    import yaml

    from trainables.config import TrialConfig
    from trainables.train.trial import RUN_CONFIG, _claim_run_dir

    cfg = TrialConfig()
    record = cfg.model_dump(mode="json")
    del record["teacher"]["shard_queries"]
    (tmp_path / RUN_CONFIG).write_text(yaml.safe_dump(record))
    _claim_run_dir(tmp_path, cfg)   # no "different trial config" error
