"""`kd-study convert-scores IN.pkl OUT.parquet --trust-pickle`: the public teacher-scores pickle as Parquet, once.

The one step that holds the whole `{qid: {pid: score}}` dict (16.5 GiB for MS MARCO's 160M pairs);
studies then name OUT.parquet as `teacher.scores_file` and read only their pools' pairs from it
(trainables/data/scores_parquet.py).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from trainables.config import ConfigError, is_pickle_path


def cmd_convert_scores(args: argparse.Namespace) -> int:
    from trainables.data.scores_parquet import convert_pickle, is_parquet_path

    source, target = Path(args.source), Path(args.target)
    if not is_pickle_path(source):
        raise ConfigError(f"{source}: expected the public pickle layout (.pkl/.pickle, optionally .gz)")
    if not is_parquet_path(target):
        raise ConfigError(f"{target}: the output must be named .parquet (teacher.scores_file reads it by its name)")
    if not source.is_file():
        raise ConfigError(f"{source}: no such file")
    started = time.perf_counter()
    pairs = convert_pickle(source, target, trust_pickle=args.trust_pickle)
    print(f"kd-study: {pairs:,} teacher scores written to {target} ({target.stat().st_size / 2**20:,.1f} MiB, "
          f"{time.perf_counter() - started:.1f} s); name it as teacher.scores_file")
    return 0
