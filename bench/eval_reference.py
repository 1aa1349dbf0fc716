"""Reference points of a trial config: the untrained student and the teacher on the trial's own eval sets.

What every trial of a study should be read against: where the student starts (the initial
student, before any distillation; with `init: {from: warmup}` also the shared KL warm-up student that
every trial refines) and what it imitates (the teacher, used as a bi-encoder retriever). All go
through the trials' own `evaluate_student`, on the same sets, subsets and seed, so the numbers are
directly comparable with the study's metrics. Prints a Markdown table.

    python bench/eval_reference.py search_spaces/trial_scifact.yaml > bench/results/reference_scifact.md
    kd-study export scifact_wkl_v2 -o kd-runs/wkl_v2_best.yaml
    python bench/eval_reference.py kd-runs/wkl_v2_best.yaml --skip-teacher   # + the warm-up student
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _env  # noqa: E402, F401  (bench/_env.py sets the environment: offline models, quiet Ray)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="trial config YAML (e.g. search_spaces/trial_scifact.yaml)")
    parser.add_argument("--skip-teacher", action="store_true", help="only the untrained student")
    args = parser.parse_args(argv)

    from trainables.config import TrialConfig
    from trainables.evaluate.evaluation import evaluate_student
    from trainables.models.student import BiEncoder

    cfg = TrialConfig.from_yaml(args.config)
    if cfg.teacher.kind != "bi_encoder" and not args.skip_teacher:
        print(f"{args.config}: a {cfg.teacher.kind} teacher cannot retrieve: use --skip-teacher", file=sys.stderr)
        return 2
    models = [("untrained student", cfg.student, None)]
    if cfg.init.start == "warmup":
        warm = cfg.init.warmup
        models.append((f"warm-up student ({warm.loss.name}, {warm.steps} steps, lr {warm.lr:g})", cfg.student,
                       warm_start_file(cfg)))
    models += [] if args.skip_teacher else [("teacher", cfg.teacher, None)]
    rows = []
    for label, model_cfg, weights in models:
        started = time.perf_counter()
        encoder = BiEncoder.from_config(model_cfg, cfg.cache_dir)
        if weights is not None:
            from trainables.train.warm_start import load_warm_start

            load_warm_start(encoder, weights)
        result = evaluate_student(encoder, cfg.eval, cfg.seed, progress=True)
        seconds = time.perf_counter() - started
        layers = model_cfg.num_layers or "all"
        rows.append((f"{label} ({model_cfg.model}, layers {layers}, passage max len {model_cfg.passage_max_length})",
                     result.metrics, seconds))
        print(f"{label}: {seconds:.0f} s", file=sys.stderr)

    keys = sorted({k for _, metrics, _ in rows for k in metrics})
    print(f"Reference points for `{args.config}` (same eval sets, subsets and seed as its trials):\n")
    print("| model | " + " | ".join(f"`{k}`" for k in keys) + " | seconds |")
    print("|---|" + "---|" * (len(keys) + 1))
    for label, metrics, seconds in rows:
        print(f"| {label} | " + " | ".join(f"{metrics[k]:.4f}" if k in metrics else "—" for k in keys)
              + f" | {seconds:.0f} |")
    return 0


def warm_start_file(cfg) -> str:
    """The config's shared warm start, as its trials load it (`prepare_assets` reuses it, or trains it once)."""
    from trainables.prepare.assets import prepare_assets
    from trainables.train.warm_start import warm_start_path

    return str(warm_start_path(cfg, prepare_assets(cfg, progress=False).training_set_path))


if __name__ == "__main__":
    sys.exit(main())
