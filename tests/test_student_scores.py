"""trainables/data/student_scores.py: streamed scoring equals one encode of every passage, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

import trainables.data.student_scores as streamed
from trainables.config import StudentConfig
from trainables.data.doc_table import DocTable
from trainables.data.types import DictCorpus
from trainables.models.student import BiEncoder


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> BiEncoder:
    cfg = StudentConfig(model="tiny:bert", num_layers=1, query_max_length=16, passage_max_length=32)
    return BiEncoder.from_config(cfg, tmp_path_factory.mktemp("kd-cache"))


def test_windows_of_passages_score_exactly_as_one_encode_of_all(student, monkeypatch):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    texts = {f"d{i}": " ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for i in range(120)}
    docs = DocTable.of(list(texts))
    pools = [rng.choice(120, size=int(rng.integers(0, 30)), replace=False) for _ in range(9)]
    rows = np.full((9, 30), -1, dtype=np.int64)
    for i, pool in enumerate(pools):
        rows[i, :len(pool)] = docs.rows([f"d{j}" for j in pool])
    q_emb = student.encode([f"query {i}" for i in range(9)], is_query=True)
    # What the build did before streaming: every distinct passage encoded in one call, one product per query.
    unique = list(dict.fromkeys(d for pool in pools for d in (f"d{j}" for j in pool)))
    emb = student.encode([texts[d] for d in unique], is_query=False, batch_size=4)
    at = {d: i for i, d in enumerate(unique)}
    expected = np.full(rows.shape, np.nan, dtype=np.float32)
    for i, pool in enumerate(pools):
        if len(pool):
            expected[i, :len(pool)] = emb[[at[f"d{j}"] for j in pool]] @ q_emb[i]
    monkeypatch.setattr(streamed, "TEXT_CHUNK", 8)                        # 2 batches of 4 per chunk
    monkeypatch.setattr(streamed, "WINDOW_BYTES", 4 * student.dim * 16)  # 16 passages per window
    got = streamed.student_scores(DictCorpus(texts), docs, student, q_emb, rows, batch_size=4, progress=False)
    np.testing.assert_array_equal(got, expected)
