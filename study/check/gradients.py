"""How much of a loss's gradient its auxiliary terms carry: `kd-study check`'s "auxiliary gradient share".

A trial's loss is the distillation term (KL, MarginMSE, WKL, …) plus, with `loss.in_batch_weight`
λ > 0, the in-batch contrastive NLL (trainables/losses/in_batch.py). Both act on the student's
scores, so on one sample batch the gradient of each term w.r.t. those scores says which one drives
training: at γ1 = 5 WKL and MarginMSE trained the same student query by query in evidence v2
because the in-batch term carried almost all of the gradient (a cosine MarginMSE at scale 1 has ~1%
of it), an undeclared confound of every compared arm (issue 26).

    share = ‖∂(λ·L_IB)/∂s‖ / (‖∂L_distill/∂s‖ + ‖∂(λ·L_IB)/∂s‖)

over every student score the batch has: 0 = no auxiliary term, 0.5 = both terms push equally hard,
→ 1 = the auxiliary term trains the student and the distillation loss barely matters. The batch is
`optim.batch_size` queries of the check's score sample (each [positive, K sampled candidates], as a
trial's first step builds it); a query's scores with the other queries' passages, which the sample
does not hold, are stood in for by its own lowest-scored pool entries (in-batch passages are
off-topic, as those are). Only the student's scores are differentiated: this is a statement about
the loss's direction at the initial student, not about the parameters' gradient. Torch only.
"""
from __future__ import annotations

import numpy as np

from trainables.config import TrialConfig

# Above this share the auxiliary term's gradient is larger than the distillation term's.
AUXILIARY_SHARE_WARNING = 0.5


def auxiliary_gradient_share(cfg: TrialConfig, teacher: np.ndarray, student: np.ndarray, ranks: np.ndarray,
                             student_pool: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(share, ‖g_distill‖, ‖g_aux‖) on one batch of `cfg.optim.batch_size` query lists.

    `teacher`/`student` [Q, 1 + K]: each query's positive (column 0) and sampled candidates;
    `ranks` the student's ranks of them (WKL's β); `student_pool` [Q, N] the query's pool scores
    (NaN padded), whose lowest entries stand in for the other queries' passages.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a few kB of tensors: thread start-up costs more than the arithmetic
    try:
        return _share(cfg, teacher, student, ranks, student_pool, seed)
    finally:
        torch.set_num_threads(threads)


def _share(cfg: TrialConfig, teacher: np.ndarray, student: np.ndarray, ranks: np.ndarray,
           student_pool: np.ndarray, seed: int) -> tuple[float, float, float]:
    import torch

    from trainables.losses import in_batch_nll
    from trainables.train.dispatch import compute_loss

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(student), min(cfg.optim.batch_size, len(student)), replace=False))
    b, n = len(rows), student.shape[1]
    s = torch.tensor(student[rows], dtype=torch.float64, requires_grad=True)
    t = torch.tensor(teacher[rows], dtype=torch.float64)
    positives = torch.zeros((b, n), dtype=torch.bool)
    positives[:, 0] = True
    ranks_now = torch.tensor(ranks[rows], dtype=torch.float64)   # the per-step state WKL's β reads; others ignore it
    distill_cfg = cfg.loss.model_copy(update={"in_batch_weight": 0.0})
    distill = compute_loss(distill_cfg, s, t, positives, state=ranks_now,
                           step=getattr(cfg.loss, "kl_warmup_steps", 0))   # past a KL warm-up: the loss itself
    (g_distill,) = torch.autograd.grad(distill, s)
    norm_distill = float(g_distill.norm())
    weight = cfg.loss.in_batch_weight
    if weight <= 0:
        return 0.0, norm_distill, 0.0
    others = torch.tensor(_off_topic(student_pool[rows], (b - 1) * n, rng), dtype=torch.float64, requires_grad=True)
    # row i: its own list at columns i·n … i·n + n − 1 (the same scores the distillation term sees), then the rest
    columns = [torch.cat([others[i, :i * n], s[i], others[i, i * n:]]) for i in range(b)]
    scores = torch.stack(columns)
    positive_col = torch.arange(b) * n
    aux = weight * in_batch_nll(scores, positive_col, torch.ones_like(scores, dtype=torch.bool),
                                cfg.loss.student_temperature)
    g_own, g_others = torch.autograd.grad(aux, (s, others))
    norm_aux = float(torch.sqrt(g_own.pow(2).sum() + g_others.pow(2).sum()))
    total = norm_distill + norm_aux
    return (norm_aux / total if total > 0 else 0.0), norm_distill, norm_aux


def _off_topic(pool: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """Per query, `width` scores drawn from the lower half of its pool scores (the other queries' passages)."""
    out = np.empty((pool.shape[0], width))
    for i, row in enumerate(pool):
        finite = np.sort(row[np.isfinite(row)])
        low = finite[: max(1, len(finite) // 2)] if len(finite) else np.zeros(1)
        out[i] = rng.choice(low, width, replace=True)
    return out


def prior_lists(cfg: TrialConfig, queries: int = 64, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Without a score sample: cosine-like lists (a pool spread over 0.3–0.7, the positive 0.1 above its best,
    the student within 0.05 of the teacher), a cross-encoder teacher's ×10 (logit-like); ranks by the student."""
    rng = np.random.default_rng(seed)
    depth, k = cfg.data.max_pool_size, cfg.sampler.k
    pool = np.sort(rng.uniform(0.3, 0.7, (queries, depth)), axis=1)[:, ::-1]
    student_pool = pool + rng.normal(0, 0.05, pool.shape)
    picks = np.sort(np.stack([rng.choice(depth, k, replace=False) for _ in range(queries)]), axis=1)
    teacher = np.concatenate([pool[:, :1] + 0.1, np.take_along_axis(pool, picks, 1)], axis=1)
    student = np.concatenate([student_pool[:, :1] + 0.1, np.take_along_axis(student_pool, picks, 1)], axis=1)
    if cfg.teacher.kind == "cross_encoder":
        teacher = teacher * 10.0
    ranks = (student[:, None, :] > student[:, :, None]).sum(axis=2) + 1.0   # within the list: 1 = best
    return teacher, student, ranks, student_pool
