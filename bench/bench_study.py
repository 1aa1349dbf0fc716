"""Study efficiency: how much of a study's wall time its CPU slots spend training and evaluating.

    efficiency = Σ over trials (train + eval seconds) / (study wall seconds × concurrent slots)

where the study wall is the first trial run's start to the last one's end (MLflow run times: the
shared assets, built once before any trial, are left out), train and eval seconds are the trials'
own `outputs.TRAIN_SECONDS` and `outputs.EVAL_SECONDS`, and the slots are the trials that can run
at once (`max_concurrent_trials`, each holding its Ray Train workers' CPUs). What is not train or
eval is Ray Train start-up, model loading, checkpoints and MLflow: the overhead replicates should
hide rather than multiply.

Two variants of the offline quickstart (search_spaces/quickstart.yaml, 6 points), each run as a
user runs it (`kd-study run`, its own local Ray with --num-cpus):

  * `one-at-a-time`: the quickstart as shipped: one seed per point, one trial at a time, 2 DDP
    workers × 1 CPU per trial (slots = 1);
  * `replicates`: `study.replicates: 2`, each seed a 1-worker trial, 2 trials at a time (slots = 2):
    a point's two seeds side by side, one per core.

    python bench/bench_study.py                               # both variants, 6 points, 2 CPUs
    python bench/bench_study.py --variants replicates --points 3
    python bench/bench_study.py --repeats 3 --write bench/results/study.md

Each variant runs `--repeats` times (interleaved: one-at-a-time, replicates, one-at-a-time, ...);
the summary gives the median efficiency and its range over the repeats.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _env import REPO_ROOT  # noqa: E402  (bench/_env.py: offline models, quiet Ray)

QUICKSTART = REPO_ROOT / "search_spaces" / "quickstart.yaml"
VARIANTS = {
    # name: (study overrides, base resources, slots)
    "one-at-a-time": ({"replicates": 1, "max_concurrent_trials": 1}, {"num_workers": 2, "cpus_per_worker": 1}),
    "replicates": ({"replicates": 2, "max_concurrent_trials": 2}, {"num_workers": 1, "cpus_per_worker": 1}),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--points", type=int, default=6, help="configuration points (the quickstart's first N)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of each study's local Ray")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant (median and range reported)")
    parser.add_argument("--cache-dir", default=str(REPO_ROOT / ".kd-cache"), help="shared assets cache")
    parser.add_argument("--workdir", default=None, help="studies and MLflow store (default: a temp folder)")
    parser.add_argument("--write", metavar="PATH", help="also write the table (Markdown) to PATH")
    return parser.parse_args(argv)


def variant_space(name: str, points: int, cache_dir: str, folder: Path) -> tuple[Path, int]:
    """The quickstart space of a variant (first `points` points_to_evaluate) and its slots."""
    study, resources = VARIANTS[name]
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["base"]["resources"] = dict(resources)
    raw["base"]["cache_dir"] = cache_dir
    raw["study"].update(study, name=f"bench-{name}", num_samples=points,
                        points_to_evaluate=raw["study"]["points_to_evaluate"][:points])
    path = folder / f"bench-{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, study["max_concurrent_trials"]


def run_variant(name: str, args: argparse.Namespace, folder: Path) -> dict:
    from study.report.runs import load_study_runs
    from trainables.outputs import EVAL_SECONDS, TRAIN_SECONDS

    folder.mkdir(parents=True, exist_ok=True)
    space, slots = variant_space(name, args.points, args.cache_dir, folder)
    uri = f"sqlite:///{folder / 'mlruns.db'}"
    command = [sys.executable, "-m", "study.cli", "--tracking-uri", uri, "--root", str(folder / "studies"),
               "--num-cpus", str(args.num_cpus), "run", str(space), "--quiet", "--no-report"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray_bench_", dir="/tmp")}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    total = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{name}: kd-study run exited {done.returncode}")
    trials = load_study_runs(f"bench-{name}", uri).trials
    work = float((trials[TRAIN_SECONDS] + trials[EVAL_SECONDS]).sum())
    wall = (trials["end_time"].max() - trials["start_time"].min()) / 1000.0
    per_trial = ((trials["end_time"] - trials["start_time"]) / 1000.0).mean()
    return {"variant": name, "repeat": folder.name, "trials": len(trials), "slots": slots, "train_eval_s": work, "wall_s": wall,
            "trial_wall_s": float(per_trial), "train_eval_per_trial_s": work / len(trials),
            "efficiency": work / (wall * slots), "command_s": total}


def table(rows: list[dict]) -> str:
    header = ["variant", "repeat", "trials", "slots", "Σ train+eval (s)", "study wall (s)", "mean trial wall (s)",
              "train+eval per trial (s)", "efficiency", "kd-study run (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['repeat']} | {r['trials']} | {r['slots']} | {r['train_eval_s']:.1f} | {r['wall_s']:.1f} | "
                     f"{r['trial_wall_s']:.1f} | {r['train_eval_per_trial_s']:.1f} | {r['efficiency']:.3f} | "
                     f"{r['command_s']:.0f} |")
    return "\n".join(lines)


def summary(rows: list[dict], names: list[str]) -> str:
    """Median efficiency per variant with its range over the repeats, and the replicates' gain."""
    import statistics

    lines = ["| variant | repeats | median efficiency | min – max |", "|---|---|---|---|"]
    for name in names:
        values = [r["efficiency"] for r in rows if r["variant"] == name]
        lines.append(f"| {name} | {len(values)} | {statistics.median(values):.3f} | "
                     f"{min(values):.3f} – {max(values):.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)} (expected: {', '.join(VARIANTS)})")
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="kd_bench_study_"))
    folder.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    rows = []
    for repeat in range(1, args.repeats + 1):
        for name in names:
            rows.append(run_variant(name, args, folder / f"{name}-{repeat}"))
            print(table(rows[-1:]), flush=True)
    text = (f"Study efficiency, `python bench/bench_study.py --points {args.points} --repeats {args.repeats}` "
            f"({args.num_cpus} CPUs; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end):"
            f"\n\n{table(rows)}\n\n{summary(rows, names)}\n")
    print(text)
    if args.write:
        Path(args.write).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
