"""trainables/train/precision.py and `resources.precision`: the knob at the edge, its meaning per device, bf16 on CPU."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainables.config import ConfigError, StudentConfig, TrialConfig, loss_config as LossConfig
from trainables.train.precision import PRECISIONS, autocast, autocast_dtype, cpu_has_bf16

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


# ---- the knob -----------------------------------------------------------------------------------
def test_precision_defaults_to_auto_and_rejects_other_values_in_one_line():
    assert TrialConfig().resources.precision == "auto"
    for value in PRECISIONS:
        assert TrialConfig.from_dict({"resources": {"precision": value}}).resources.precision == value
    with pytest.raises(ConfigError) as error:
        TrialConfig.from_dict({"resources": {"precision": "fp16"}}, source="trial.yaml")
    assert str(error.value) == ("trial.yaml: resources.precision: Input should be 'gpu-bf16', 'fp32', 'bf16' "
                                "or 'auto'")
    assert "\n" not in str(error.value)


def test_legacy_mixed_precision_reads_as_precision_and_cannot_contradict_it():
    """Checkpoints and study.json files written before the knob still load, with the meaning they had."""
    assert TrialConfig.from_dict({"resources": {"mixed_precision": True}}).resources.precision == "gpu-bf16"
    assert TrialConfig.from_dict({"resources": {"mixed_precision": False}}).resources.precision == "fp32"
    assert "mixed_precision" not in TrialConfig().model_dump()["resources"]
    with pytest.raises(ConfigError, match=r"^t.yaml: resources: give resources.precision only"):
        TrialConfig.from_dict({"resources": {"mixed_precision": False, "precision": "bf16"}}, source="t.yaml")


def test_each_precision_means_its_row_of_the_table(tmp_path, monkeypatch):
    with_bf16, without = tmp_path / "bf16", tmp_path / "plain"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_has_bf16(with_bf16) and not cpu_has_bf16(without) and not cpu_has_bf16(tmp_path / "absent")

    assert autocast_dtype("gpu-bf16", CPU) is None and autocast_dtype("gpu-bf16", CUDA) is torch.bfloat16
    assert autocast_dtype("fp32", CUDA) is None and autocast_dtype("bf16", CPU) is torch.bfloat16
    monkeypatch.setattr("trainables.train.precision.cpu_has_bf16", lambda: True)
    assert autocast_dtype("auto", CPU) is torch.bfloat16
    monkeypatch.setattr("trainables.train.precision.cpu_has_bf16", lambda: False)
    assert autocast_dtype("auto", CPU) is None
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("fp16", CPU)


# ---- bf16 on this CPU: training step and encoding --------------------------------------------------
def _step_inputs(student, n_queries: int = 4, n: int = 5):
    from trainables.train.step import StepInputs

    rng = np.random.default_rng(0)
    queries = [f"what does protein {i} bind" for i in range(n_queries)]
    passages = [f"protein {i} binds receptor {j} in the cell membrane of {j % 3} tissues"
                for i in range(n_queries) for j in range(n)]
    teacher = torch.from_numpy(rng.normal(0.5, 0.2, (n_queries, n)).astype(np.float32))
    positives = torch.zeros(n_queries, n, dtype=torch.bool)
    positives[:, 0] = True
    return StepInputs(queries=student.tokenize(queries, is_query=True),
                      passages=student.tokenize(passages, is_query=False), n=n, teacher_scores=teacher,
                      positive_mask=positives, valid_mask=torch.ones(n_queries, n, dtype=torch.bool),
                      student_ranks=None, sampled_teacher_scores=[row for row in teacher[:, 1:].numpy()],
                      loss_weight=1.0)


@pytest.mark.slow
def test_bf16_autocast_on_cpu_trains_with_a_finite_loss_close_to_fp32_and_encodes_float32(tmp_path):
    from trainables.models.student import BiEncoder
    from trainables.train.step import DistillScorer, make_optimizer, train_step

    student_cfg = StudentConfig(model="packaged:all-MiniLM-L6-v2", num_layers=2, query_max_length=16,
                                passage_max_length=32)
    trial = TrialConfig(student=student_cfg)
    loss_cfg = LossConfig(name="kl", student_temperature=0.05, teacher_temperature=0.05)
    losses, embeddings = {}, {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(0)
        student = BiEncoder.from_config(student_cfg, tmp_path)
        with autocast(CPU, dtype):
            embeddings[dtype] = student.encode(["a passage about proteins", "a query"], is_query=False)
        model = DistillScorer(student)
        optimizer, scheduler = make_optimizer(model, trial, steps=2)
        model.train()
        losses[dtype] = [train_step(model, optimizer, scheduler, _step_inputs(student), loss_cfg, step,
                                    trial.optim.max_grad_norm, CPU, dtype) for step in range(2)]
        assert all(p.dtype == torch.float32 for p in model.parameters())   # autocast never touches the weights

    assert all(math.isfinite(v) for v in losses[torch.bfloat16])
    # the first loss is the same weights' forward: bf16's 8-bit mantissa moves it by well under 5%
    assert losses[torch.bfloat16][0] == pytest.approx(losses[None][0], rel=0.05)
    assert embeddings[torch.bfloat16].dtype == np.float32   # what faiss takes
    cosine = (embeddings[None] * embeddings[torch.bfloat16]).sum(axis=1)  # unit vectors (cosine student)
    assert cosine.min() > 0.99
