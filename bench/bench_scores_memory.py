"""Peak memory of reading teacher scores from a file, measured on a synthetic file and extrapolated to MS MARCO.

Writes a synthetic scores file in each layout (`{qid: {pid: score}}` gzipped pickle with int ids, as
sentence-transformers publishes; gzipped TSV `qid pid score`), then in a fresh process per layout
reads the pairs of `--wanted-queries` queries × `--pool` passages with `read_teacher_scores` and
reports the peak of Python allocations while reading (`tracemalloc`: every Python object, the
pickle's dict included; the interpreter's baseline excluded) and what the result holds afterwards. The pickle layout is one
dict by construction, so its peak grows with the file's pairs; the TSV layout is streamed and keeps
only the wanted pairs, so its peak grows with the pools. Extrapolation is linear in those counts.

    python bench/bench_scores_memory.py                   # 4,000 queries × 250 pids = 1M pairs
    python bench/bench_scores_memory.py --queries 8000    # 2M pairs
"""
from __future__ import annotations

import argparse
import gzip
import json
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MSMARCO_PAIRS = 160_000_000          # the public cross-encoder scores file (dataset card: 160M pairs)
MSMARCO_WANTED = 100_000 * 101       # a 100k-query study: 100 candidates + 1 positive per query

_READ = """
import json, sys, tracemalloc
from trainables.data.teacher_scores import read_teacher_scores
path, wanted_queries, pool = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
wanted = {str(q): [str(q * 1000 + p) for p in range(pool)] for q in range(wanted_queries)}
tracemalloc.start()
found = read_teacher_scores(path, wanted, allow_pickle=True)
held, peak = tracemalloc.get_traced_memory()
print(json.dumps({"peak_mib": peak / 2**20, "held_mib": held / 2**20, "pairs_found": sum(map(len, found.values()))}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--pids", type=int, default=250, help="scored passages per query in the file")
    parser.add_argument("--wanted-queries", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=100, help="wanted passages per wanted query")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pairs = args.queries * args.pids
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        scores = {q: {q * 1000 + p: float(s) for p, s in enumerate(rng.normal(size=args.pids))}
                  for q in range(args.queries)}
        files = {"pickle (.pkl.gz)": Path(folder, "scores.pkl.gz"), "TSV (.tsv.gz)": Path(folder, "scores.tsv.gz")}
        files["pickle (.pkl.gz)"].write_bytes(gzip.compress(pickle.dumps(scores)))
        with gzip.open(files["TSV (.tsv.gz)"], "wt") as handle:
            for q, row in scores.items():
                handle.writelines(f"{q}\t{p}\t{s:.6f}\n" for p, s in row.items())
        del scores
        wanted = args.wanted_queries * args.pool
        for layout, path in files.items():
            out = subprocess.run([sys.executable, "-c", _READ, str(path), str(args.wanted_queries), str(args.pool)],
                                 capture_output=True, text=True, check=True).stdout
            measured = json.loads(out.strip().splitlines()[-1])
            assert measured["pairs_found"] == wanted, measured
            per_pair = measured["peak_mib"] / (pairs if layout.startswith("pickle") else wanted)
            extrapolated = per_pair * (MSMARCO_PAIRS if layout.startswith("pickle") else MSMARCO_WANTED) / 1024
            rows.append((layout, path.stat().st_size / 2**20, measured["peak_mib"], measured["held_mib"],
                         per_pair * 2**20, extrapolated))
    print(f"synthetic file: {pairs:,} pairs ({args.queries:,} queries × {args.pids}); wanted: {wanted:,} pairs "
          f"({args.wanted_queries:,} queries × {args.pool})\n")
    print("| layout | file MiB | peak while reading MiB | held after MiB | peak bytes per pair (pickle: per file "
          "pair; TSV: per wanted pair) | extrapolated peak at MS MARCO size GiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for layout, size, peak, held, per_pair, extrapolated in rows:
        print(f"| {layout} | {size:.1f} | {peak:.0f} | {held:.0f} | {per_pair:.0f} | {extrapolated:.1f} |")
    print(f"\nMS MARCO: pickle = all {MSMARCO_PAIRS:,} pairs of the public file; "
          f"TSV = the {MSMARCO_WANTED:,} pairs of a 100k-query study with 100-candidate pools.")


if __name__ == "__main__":
    main()
