"""A deterministic synthetic collection with MS MARCO passage's shape, at a stated fraction of its size.

Full size (fraction 1.0): 8,841,823 passages, 100,000 training queries (one positive each), a TREC
run of 150 candidates per training query, a teacher-scores TSV for every (query, positive | candidate)
pair, 6,980 dev queries with one judged passage each. Written as a BEIR folder (`beir:<dir>`, splits
`train` and `dev`) plus `run.trec` and `teacher_scores.tsv`.

Passage lengths (words): a log-normal fitted to the 5,000 real MS MARCO passages of
`shared/data/msmarco_dl19_subset` (log-mean 4.00, log-sd 0.373: mean 58.7, sd 22.9 words), its
log-mean shifted so the mean is MS MARCO's published 56 words; clipped to [1, 362]. Query lengths:
the same fit on that subset's queries (mean 5.4 words, log-sd 0.4). Words: whole-word entries of the
student's tokenizer vocabulary (letters only, no `##` pieces), drawn Zipf(1.0) by a seeded rank, so
text tokenises to MS MARCO-like token counts (~1.2 tokens per word). Candidates are uniform random
passages; the query's positive is among them with probability 0.6 at a random rank, like a BM25 run.
Everything follows from `seed`: the same arguments give byte-identical files.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FULL = {"passages": 8_841_823, "train_queries": 100_000, "dev_queries": 6_980}
CANDIDATES = 150
PASSAGE_LOG_SD, PASSAGE_MEAN_WORDS, PASSAGE_MAX_WORDS = 0.373, 56.0, 362
QUERY_LOG_SD, QUERY_MEAN_WORDS = 0.4, 5.4
POSITIVE_IN_RUN = 0.6
CHUNK = 100_000


@dataclass(frozen=True)
class Sizes:
    passages: int
    train_queries: int
    dev_queries: int

    @classmethod
    def at(cls, fraction: float) -> Sizes:
        return cls(*(max(1, round(FULL[name] * fraction)) for name in ("passages", "train_queries", "dev_queries")))


def vocabulary_words(tokenizer) -> np.ndarray:
    """Whole-word, letters-only entries of the tokenizer's vocabulary, in id order."""
    words = [w for w, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
             if w.isalpha() and w.isascii() and len(w) > 1 and w.islower()]
    return np.array(words, dtype=object)


def generate(folder: Path, sizes: Sizes, tokenizer, seed: int = 0) -> dict[str, Path]:
    """Write the collection under `folder`; returns the paths of the BEIR folder, run and scores files."""
    rng = np.random.default_rng(seed)
    words = vocabulary_words(tokenizer)
    zipf = 1.0 / np.arange(1, len(words) + 1)
    zipf /= zipf.sum()
    words = words[rng.permutation(len(words))]           # which word is frequent: seeded
    beir = folder / "beir"
    (beir / "qrels").mkdir(parents=True, exist_ok=True)

    def texts(n: int, mean: float, log_sd: float, cap: int) -> list[str]:
        mu = math.log(mean) - log_sd ** 2 / 2
        lengths = np.clip(np.rint(rng.lognormal(mu, log_sd, n)), 1, cap).astype(np.int64)
        drawn = words[rng.choice(len(words), size=int(lengths.sum()), p=zipf)]
        ends = np.cumsum(lengths)
        return [" ".join(drawn[end - length:end]) for end, length in zip(ends.tolist(), lengths.tolist())]

    with open(beir / "corpus.jsonl", "w") as out:
        for start in range(0, sizes.passages, CHUNK):
            n = min(CHUNK, sizes.passages - start)
            body = texts(n, PASSAGE_MEAN_WORDS, PASSAGE_LOG_SD, PASSAGE_MAX_WORDS)
            out.write("".join(f'{{"_id": "{start + i}", "title": "", "text": "{t}"}}\n' for i, t in enumerate(body)))
    n_queries = sizes.train_queries + sizes.dev_queries
    query_texts = texts(n_queries, QUERY_MEAN_WORDS, QUERY_LOG_SD, 40)
    qids = [f"q{i}" for i in range(n_queries)]
    positives = rng.integers(0, sizes.passages, n_queries)
    with open(beir / "queries.jsonl", "w") as out:
        out.write("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in zip(qids, query_texts)))
    for split, rows in (("train", range(sizes.train_queries)), ("dev", range(sizes.train_queries, n_queries))):
        with open(beir / "qrels" / f"{split}.tsv", "w") as out:
            out.write("query-id\tcorpus-id\tscore\n" + "".join(f"{qids[i]}\t{positives[i]}\t1\n" for i in rows))

    run_path, scores_path = folder / "run.trec", folder / "teacher_scores.tsv"
    with open(run_path, "w") as run, open(scores_path, "w") as scores:
        for start in range(0, sizes.train_queries, 1000):
            stop = min(start + 1000, sizes.train_queries)
            candidates = rng.integers(0, sizes.passages, (stop - start, CANDIDATES))
            slot = rng.integers(0, CANDIDATES, stop - start)
            keep = rng.random(stop - start) < POSITIVE_IN_RUN
            teacher = np.sort(rng.normal(0.0, 2.0, (stop - start, CANDIDATES)), axis=1)[:, ::-1]
            run_lines, score_lines = [], []
            for row, i in enumerate(range(start, stop)):
                pids = candidates[row]
                if keep[row]:
                    pids[slot[row]] = positives[i]
                pids = list(dict.fromkeys(pids.tolist()))
                run_lines += [f"{qids[i]} Q0 {p} {r + 1} {CANDIDATES - r} synthetic\n" for r, p in enumerate(pids)]
                score_lines += [f"{qids[i]}\t{p}\t{s:.4f}\n" for p, s in zip(pids, teacher[row])]
                if positives[i] not in pids:
                    score_lines.append(f"{qids[i]}\t{positives[i]}\t{teacher[row, 0] + 1.0:.4f}\n")
            run.write("".join(run_lines))
            scores.write("".join(score_lines))
    return {"beir": beir, "run": run_path, "scores": scores_path}


def worker_training_set(folder: Path, cache_dir: Path, queries: int, passages: int, tokenizer,
                        query_max_length: int = 32, passage_max_length: int = 128, seed: int = 0) -> Path:
    """A training set of `queries` × (1 positive + 150 pool passages) drawn from `passages`, and its token ids,
    written directly (no corpus, no teacher): what a trial worker opens, at a size the driver stages cannot reach
    on a small machine. Texts are empty strings (a worker never reads them); token ids are random vocabulary ids
    with the fitted length distribution (×1.3 tokens per word, + [CLS]/[SEP], truncated like the tokenizer)."""
    from trainables.data.token_ids import TOKENS_VERSION, tokenizer_digest
    from trainables.data.training_set import TrainingSet, content_key, full_digest

    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, passages, (queries, 1 + CANDIDATES))
    used, inverse = np.unique(drawn, return_inverse=True)      # rows of the training set's passage table
    rows = inverse.reshape(drawn.shape).astype(np.int64)
    scores = rng.normal(0.0, 2.0, drawn.shape).astype(np.float32)
    path = folder / f"worker-{queries}.npz"
    if not path.is_file():
        TrainingSet(query_ids=[f"q{i}" for i in range(queries)], query_texts=[""] * queries,
                    doc_ids=[str(d) for d in used.tolist()], doc_texts=[""] * len(used),
                    positive_doc_idx=rows[:, :1], pool_doc_idx=rows[:, 1:],
                    teacher_positive_scores=scores[:, :1], teacher_pool_scores=scores[:, 1:],
                    student_positive_scores=scores[:, :1] * 0.5, student_pool_scores=scores[:, 1:] * 0.5).save(path)
    source = f"trainset:{full_digest(path)}"
    digest = tokenizer_digest(tokenizer)
    for name, n, mean_words, log_sd, max_length in (("query_texts", queries, QUERY_MEAN_WORDS, QUERY_LOG_SD,
                                                      query_max_length),
                                                     ("doc_texts", len(used), PASSAGE_MEAN_WORDS, PASSAGE_LOG_SD,
                                                      passage_max_length)):
        stem = cache_dir / "tokens" / content_key("tokens", TOKENS_VERSION, f"{source}:{name}", digest, max_length)
        _write_random_token_ids(stem, n, mean_words, log_sd, max_length, tokenizer, rng)
    return path


def _write_random_token_ids(stem: Path, n: int, mean_words: float, log_sd: float, max_length: int, tokenizer,
                            rng: np.random.Generator) -> None:
    from trainables.data.token_ids import _settings
    from trainables.data.training_set import write_checksummed

    if stem.with_name(stem.name + ".json").is_file():
        return
    stem.parent.mkdir(parents=True, exist_ok=True)
    mu = math.log(mean_words * 1.3) - log_sd ** 2 / 2
    lengths = np.clip(np.rint(rng.lognormal(mu, log_sd, n)), 1, max_length - 2).astype(np.int64) + 2
    offsets = np.cumsum(lengths)
    total = int(offsets[-1])

    def write_ids(tmp: Path) -> None:
        ids = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint16, shape=(total,))
        for start in range(0, total, 1 << 26):
            stop = min(total, start + (1 << 26))
            ids[start:stop] = rng.integers(1000, 29000, stop - start, dtype=np.uint16)
        ids.flush()
        del ids

    write_checksummed(stem.with_name(stem.name + ".ids.npy"), write_ids, suffix=".tmp.npy")
    write_checksummed(stem.with_name(stem.name + ".offsets.npy"), lambda tmp: np.save(tmp, offsets), suffix=".tmp.npy")
    meta = {**_settings(tokenizer, max_length), "max_length": max_length, "texts": n, "tokens": total}
    stem.with_name(stem.name + ".json").write_text(json.dumps(meta))
