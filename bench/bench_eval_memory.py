"""Peak memory of one rank during a streamed evaluation, at several corpus sizes: it must not grow with the corpus.

A synthetic MS MARCO-shaped collection (passages of ~55 words generated on the fly, never held in a
list) is searched by the real evaluation path (`trainables.evaluate.evaluation.retrieve`: blocks → running
top-k → run) with a tiny random-weight encoder (hashed words → a random 384-d embedding bag, unit
norm), so the numbers measure the plumbing, not a transformer. Each size runs in a fresh process;
the peak is the kernel's resident high-water mark (VmHWM) reset just before the search, so imports
and setup are not counted. Streaming holds O(block + queries × k): 250k and 1M passages must peak
within 10% of each other (the `within_10pct` column of the last row).

    python bench/bench_eval_memory.py                         # 250k and 1M passages, 1,000 queries, k=1000
    python bench/bench_eval_memory.py --passages 10000 40000  # a quick look

`eval_peak_memory(n_passages, ...)` is the one measurement, for `bench/bench_scale.py` to call.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _env  # noqa: E402,F401  (offline, single-threaded tokenisers)

DIM = 384
WORDS = [f"w{i}" for i in range(30_000)]


def _peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def eval_peak_memory(n_passages: int, n_queries: int = 1000, top_k: int = 1000, block_size: int = 16384,
                     seed: int = 0) -> dict:
    """Run one streamed retrieval of `n_queries` over `n_passages` synthetic passages in this process;
    {passages, peak_mib (VmHWM during the search), baseline_mib (VmRSS before it), seconds}."""
    import numpy as np
    import torch

    from trainables.data.types import Corpus, RetrievalData
    from trainables.evaluate.evaluation import retrieve

    class SyntheticCorpus(Corpus):
        """Passage i: 55 words drawn with seed i — generated when iterated, never stored."""

        def __len__(self) -> int:
            return n_passages

        def __iter__(self):
            rng = np.random.default_rng(seed)
            for i in range(n_passages):
                yield f"p{i}", " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), 55))

        def get_many(self, doc_ids):
            raise NotImplementedError

    class HashedBagEncoder:
        """A random-weight encoder: word `w<i>` is row i of a fixed random table; the mean, unit norm."""

        dim = DIM

        def __init__(self):
            self.table = torch.nn.EmbeddingBag(2 ** 16, DIM, mode="mean")
            torch.nn.init.normal_(self.table.weight, generator=torch.Generator().manual_seed(seed))

        @torch.no_grad()
        def encode(self, texts, is_query, batch_size=128, progress=False):
            out = np.zeros((len(texts), DIM), np.float32)
            for start in range(0, len(texts), batch_size):
                words = [[int(w[1:]) % 2 ** 16 for w in t.split()] or [0] for t in texts[start:start + batch_size]]
                offsets = torch.tensor([0] + [len(w) for w in words[:-1]]).cumsum(0)
                emb = self.table(torch.tensor([i for w in words for i in w]), offsets)
                out[start:start + len(words)] = torch.nn.functional.normalize(emb, dim=-1).numpy()
            return out

    rng = np.random.default_rng(seed + 1)
    queries = {f"q{i}": " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), 8)) for i in range(n_queries)}
    qrels = {qid: {f"p{int(rng.integers(n_passages))}": 1} for qid in queries}
    data = RetrievalData("synthetic", SyntheticCorpus(), queries, qrels, fingerprint="synthetic")
    encoder = HashedBagEncoder()
    baseline = _rss_kib()
    Path("/proc/self/clear_refs").write_text("5")   # reset the high-water mark to the current RSS
    start = time.perf_counter()
    run = retrieve(encoder, data, top_k=top_k, batch_size=256, progress=False, block_size=block_size)
    seconds = time.perf_counter() - start
    assert len(run) == n_queries and all(len(row) == min(top_k, n_passages) for row in run.values())
    return {"passages": n_passages, "queries": n_queries, "top_k": top_k, "block_size": block_size,
            "peak_mib": round(_peak_kib() / 1024, 1), "baseline_mib": round(baseline / 1024, 1),
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=1000)
    parser.add_argument("--block-size", type=int, default=16384)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)   # internal: measure one size, print JSON
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(eval_peak_memory(args.one, args.queries, args.top_k, args.block_size)))
        return
    rows = []
    for n in args.passages:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--queries", str(args.queries),
                              "--top-k", str(args.top_k), "--block-size", str(args.block_size)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    smallest = rows[0]["peak_mib"]
    print(f"commit {_env.commit()}\n")
    print("| passages | queries | top_k | block | baseline MiB | peak MiB | peak / smallest's | seconds |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['passages']:,} | {row['queries']:,} | {row['top_k']} | {row['block_size']} | "
              f"{row['baseline_mib']} | {row['peak_mib']} | {row['peak_mib'] / smallest:.3f} | {row['seconds']} |")
    print(f"\nwithin_10pct: {all(abs(r['peak_mib'] / smallest - 1) <= 0.10 for r in rows)}")


if __name__ == "__main__":
    main()
