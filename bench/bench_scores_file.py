"""Peak memory of reading a study's teacher scores from a Parquet scores file (`kd-study convert-scores`'s output).

Writes a synthetic Parquet file in convert-scores' layout (int64 qid, int64 pid, float32 score, row
groups of 2**20 pairs, grouped by query) holding `--file-queries` × `--pool` pairs, then in a fresh
process builds the pools' ids as the driver holds them (lists of id strings, `Pools`) for
`--queries` of those queries and reads their pairs with `scores_for` (the path
`teacher.scores_file` takes), sampling psutil's `uss` (unique set size) every 10 ms. Reported: the
pools' ids (what the driver holds anyway), the peak while reading above that, and what the result
holds. The defaults are MS MARCO's study size: 100k queries × 150 candidates = 15M pairs, read from
a file of 30M pairs; no extrapolation.

    python bench/bench_scores_file.py                            # 15M pairs of a 30M-pair file
    python bench/bench_scores_file.py --queries 10000 --file-queries 20000   # a quick look
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROWS_PER_GROUP = 1 << 20

_READ = """
import json, sys, threading, time
import numpy as np, psutil
from trainables.data.teacher_scores import scores_for
path, n_queries, pool, file_queries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
me = psutil.Process()
start = me.memory_full_info().uss
# the pools' ids as the driver holds them: every other query of the file, its pool's pids as strings
qids = [str(q) for q in range(0, 2 * n_queries, 2)]
passages = [[str(int(q) * 1000 + p) for p in range(pool)] for q in qids]
before = me.memory_full_info().uss
peak, running = [before], [True]
def sample():
    while running[0]:
        peak[0] = max(peak[0], me.memory_full_info().uss)
        time.sleep(0.01)
thread = threading.Thread(target=sample, daemon=True)
thread.start()
started = time.perf_counter()
scores = scores_for(path, qids, passages)
seconds = time.perf_counter() - started
running[0] = False
thread.join()
after = me.memory_full_info().uss
assert all(np.array_equal(s, ((np.arange(pool) + int(q)) % 1000 / 1000).astype(np.float32))
           for q, s in zip(qids[:50], scores))
print(json.dumps({"pools_ids_mib": (before - start) / 2**20, "peak_above_mib": (max(peak[0], after) - before) / 2**20,
                  "held_mib": (after - before) / 2**20, "seconds": seconds, "pairs": sum(map(len, scores))}))
"""


def write_file(path: Path, file_queries: int, pool: int) -> None:
    """qid q's pids are q * 1000 + p (p < pool), with score ((p + q) % 1000) / 1000: checkable after reading."""
    schema = pa.schema([("qid", pa.int64()), ("pid", pa.int64()), ("score", pa.float32())])
    per_group = max(1, ROWS_PER_GROUP // pool)
    with pq.ParquetWriter(path, schema) as writer:
        for first in range(0, file_queries, per_group):
            q = np.arange(first, min(first + per_group, file_queries), dtype=np.int64)
            qids = np.repeat(q, pool)
            p = np.tile(np.arange(pool, dtype=np.int64), len(q))
            table = pa.table({"qid": qids, "pid": qids * 1000 + p,
                              "score": (((p + qids) % 1000) / 1000).astype(np.float32)}, schema=schema)
            writer.write_table(table, row_group_size=ROWS_PER_GROUP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100_000, help="the study's training queries (wanted)")
    parser.add_argument("--pool", type=int, default=150, help="candidates per query")
    parser.add_argument("--file-queries", type=int, default=200_000, help="queries in the file (≥ 2 × --queries)")
    parser.add_argument("--label", default="busy machine", help="what the machine was doing (printed with the table)")
    args = parser.parse_args()
    if args.file_queries < 2 * args.queries:
        parser.error("--file-queries must be at least twice --queries (the study wants every other query)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "scores.parquet")
        started = time.perf_counter()
        write_file(path, args.file_queries, args.pool)
        written = time.perf_counter() - started
        run = subprocess.run([sys.executable, "-c", _READ, str(path), str(args.queries), str(args.pool),
                              str(args.file_queries)], capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"the reading process failed:\n{run.stderr}")
        out = run.stdout
        measured = json.loads(out.strip().splitlines()[-1])
        size = path.stat().st_size / 2**20
    file_pairs, wanted = args.file_queries * args.pool, args.queries * args.pool
    assert measured["pairs"] == wanted, measured
    print(f"Parquet scores file: {file_pairs:,} pairs ({args.file_queries:,} queries × {args.pool}), {size:,.0f} MiB, "
          f"written in {written:.0f} s; read: {wanted:,} pairs ({args.queries:,} queries × {args.pool}); "
          f"{args.label}\n")
    print("| pairs read | pools' ids (driver, before) MiB | peak uss above them while reading MiB | "
          "held after (scores) MiB | peak bytes per pair read | read s |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {wanted:,} | {measured['pools_ids_mib']:,.0f} | {measured['peak_above_mib']:,.0f} | "
          f"{measured['held_mib']:,.0f} | {measured['peak_above_mib'] * 2**20 / wanted:.0f} | {measured['seconds']:.1f} |")


if __name__ == "__main__":
    main()
