"""The `kd-study` command line: its verbs, their arguments and help (parsing only; study.cli.verbs acts).

Each verb's options are the ones it uses: `report` and `export` start no Ray, so they take no
`--ray-address`/`--num-cpus`.
"""
from __future__ import annotations

import argparse

from trainables.outputs import BEIR_NDCG_AT_10_AVG, DEV_MRR_AT_10

from study.console.console import PROG

DESCRIPTION = """\
Hyperparameter studies of knowledge distillation for dense retrieval (Ray Tune + Optuna + MLflow).

  kd-study run search_spaces/quickstart.yaml      run a study (offline quickstart: 6 trials)
  kd-study check search_spaces/full.yaml          what its trials would do; the dimensions that cannot matter
  kd-study resume quickstart                      continue a study after a killed driver
  kd-study train best.yaml                        one distillation run, outside Tune
  kd-study report quickstart                      sensitivity tables from the MLflow store
  kd-study export quickstart                      best trial's config as a trial YAML
  kd-study export quickstart --model best-model   best trial's config, and its model as a
                                                  sentence-transformers folder
  kd-study confirm quickstart --top 3             re-run the top points at full fidelity
  kd-study convert-scores ce.pkl.gz ce.parquet --trust-pickle
                                                  public teacher scores as Parquet, once

A study's files live in kd-studies/<NAME>/ (--root), the log lines of Ray, Tune, MLflow,
transformers and faiss in its logs/ folder (--verbose: on the console); its runs in the MLflow
store (--tracking-uri, default sqlite:///mlruns.db; browse with `mlflow ui --backend-store-uri
sqlite:///mlruns.db`).
"""


# Multiple-comparison correction across each table (and across a study's configurations).
CORRECTION_OPTION = dict(choices=("holm", "bh"), default="holm",
                         help="correction of each table's contrasts: holm (family-wise error, default) or bh "
                              "(Benjamini–Hochberg false discovery rate)")


def _global_options(parser: argparse.ArgumentParser, suppress: bool, ray: bool = True, store: bool = True) -> None:
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("global options")
    if ray:
        _ray_options(group, default)
    if not store:   # `check` reads no study folder and no tracking store
        return
    group.add_argument("--tracking-uri", default=default, metavar="URI",
                       help="MLflow tracking store (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns.db); "
                            "an http(s) server is checked before anything runs")
    group.add_argument("--root", default=default, metavar="DIR",
                       help="folder holding the studies (default: kd-studies)")
    group.add_argument("--storage", default=default, metavar="PATH_OR_URI",
                       help="shared storage root of a cluster, mounted at this path on every node: studies in "
                            "PATH/kd-studies, the asset cache in PATH/.kd-cache; every Ray node is checked to see "
                            "it before any trial (default: the local --root and cache_dir; overrides study.storage)")


def _ray_options(group, default) -> None:
    group.add_argument("--ray-address", default=default, metavar="ADDR",
                       help="join this Ray cluster (e.g. auto, ray://host:10001) instead of starting a local Ray; "
                            "Ray 2.60 clusters use token auth: set RAY_AUTH_MODE=token and the cluster's token "
                            "(RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    group.add_argument("--num-cpus", type=int, default=default, metavar="N",
                       help="CPUs of the local Ray (default: all); ignored with --ray-address")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_VersionAction,
                        help="kd-study's version, the faiss build (CPU/GPU), the visible CUDA devices and the "
                             "versions of torch, Ray, MLflow and Optuna, then exit")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, description: str, ray: bool = True,
                store: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _global_options(p, suppress=True, ray=ray, store=store)
        return p

    run = command("run", "run a study from a search-space YAML", """\
Run a study: validate the space (every choice and range end must give a valid trial config),
check the tracking store, build the shared assets (pools, teacher scores) once, then run
num_samples trials with Ray Tune + Optuna (TPE, random or an exact grid) and log a parent MLflow
run with one nested run per trial. At the end: report/ and best.yaml in kd-studies/<NAME>/.
Interrupt with Ctrl-C or SIGTERM (or lose the driver) and continue with `kd-study resume NAME`.""")
    run.add_argument("space", metavar="SPACE.yaml", help="search space (see search_spaces/*.yaml)")
    run.add_argument("--name", help="study name (default: study.name in the file)")
    run.add_argument("--num-samples", type=int, metavar="N", help="override study.num_samples")
    run.add_argument("--max-concurrent-trials", type=int, metavar="N", help="override study.max_concurrent_trials")
    run.add_argument("--scheduler", choices=("asha", "none"), help="override study.scheduler (early stopping)")
    run.add_argument("--algorithm", choices=("tpe", "random", "grid"), help="override study.algorithm")
    run.add_argument("--seed", type=int, help="override study.seed (the search's seed)")
    run.add_argument("--multi-objective", action="store_true",
                     help=f"optimise {DEV_MRR_AT_10} and {BEIR_NDCG_AT_10_AVG} together (Pareto front)")
    run.add_argument("--optuna-storage", metavar="URL",
                     help="Optuna RDB storage (default: sqlite in the study folder), e.g. postgresql://...")
    run.add_argument("--experiment", metavar="NAME", help="MLflow experiment (default: the study name)")
    run.add_argument("--log-models", action="store_true", help="log each trial's trained student as an artifact")
    run.add_argument("--no-report", action="store_true", help="skip report/ and best.yaml at the end")
    run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="pin",
                     help="fix a trial config field for every trial (YAML value), e.g. --set optim.epochs=1; "
                          "a searched field is no longer searched (nor named by points_to_evaluate, grid, baseline "
                          "or contrasts)")
    run.add_argument("--dry-run", action="store_true",
                     help="validate the space and print the plan (trials, grid points); run nothing")
    _verbosity_options(run)
    run.set_defaults(command_name="run")

    convert = command("convert-scores", "turn a public {qid: {pid: score}} pickle into a Parquet scores file", """\
Convert the published teacher scores, a pickled {qid: {pid: score}} (sentence-transformers'
MS MARCO cross-encoder scores: 160M pairs), into a Parquet file with columns qid, pid, score,
once. Name OUT.parquet as teacher.scores_file: studies read it one row group at a time and keep
only their pools' pairs. Unpickling runs any code the file holds: --trust-pickle is required.""",
                      ray=False, store=False)
    convert.add_argument("source", metavar="IN.pkl", help="the pickle (.pkl/.pickle, optionally .gz)")
    convert.add_argument("target", metavar="OUT.parquet", help="the Parquet file to write")
    convert.add_argument("--trust-pickle", action="store_true",
                         help="the pickle comes from a trusted source (unpickling runs code from the file)")
    convert.set_defaults(command_name="convert-scores")

    check = command("check", "say what a space's trials would do, and flag dimensions that cannot change them", """\
For the space's grid (or its corners and a seeded sample of its points) derive per dimension what a
trial would do: optimiser steps, KL warm-up share, β refreshes, γ2's range, teacher and student
softmax entropy at the configured τ, WKL's weight spread, samplers' overlap at each K and pool depth,
MarginMSE's teacher vs reachable student margins, intermediate evaluations. Errors (a dimension that
provably cannot change the trial) exit 2; warnings (measured on a score sample) print.
`kd-study run` runs the same check before any trial.""", ray=False, store=False)
    check.add_argument("space", metavar="SPACE.yaml", help="search space (see search_spaces/*.yaml)")
    check.add_argument("--scores", choices=("auto", "cache", "sample", "none"), default="auto",
                       help="teacher scores to measure on: the study's cached ones, a few seeded queries scored "
                            "now, or none (no model loaded); auto: cache, else sample (default)")
    check.add_argument("--sample", type=int, default=16, metavar="N",
                       help="random points checked beside the corners (not in grid mode; default 16)")
    check.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="pin",
                       help="fix a trial config field, as `run --set` does")
    check.set_defaults(command_name="check")

    resume = command("resume", "continue an interrupted study", """\
Continue study NAME from kd-studies/NAME/: Tune restores its trials and the Optuna searcher;
finished trials are kept (never re-trained), the trials that were running continue from their
last checkpoint, errored trials are retried, and each keeps its MLflow run (no duplicates).""")
    resume.add_argument("name", metavar="NAME", help="the study to continue (its folder in --root)")
    resume.add_argument("--no-report", action="store_true", help="skip report/ and best.yaml at the end")
    _verbosity_options(resume)
    resume.set_defaults(command_name="resume")

    train = command("train", "run one trial config outside Tune", """\
Prepare the shared assets and run one distillation trial (Ray Train) from a trial config YAML,
e.g. a study's best.yaml; print Dev MRR@10 and BEIR nDCG@10. Re-running the same config and
name continues from its last checkpoint (a finished run re-reports its metrics), also after
Ctrl-C or SIGTERM.""")
    train.add_argument("config", metavar="CONFIG.yaml", help="trial config (trainables.config.TrialConfig)")
    train.add_argument("--name", help="run name (default: `name` in the config)")
    train.add_argument("--output-dir", metavar="DIR", help="where runs go (default: output_dir in the config)")
    _verbosity_options(train, quiet=False)
    train.add_argument("--model", metavar="DIR",
                       help="also write the trained student to DIR as a sentence-transformers folder "
                            "(SentenceTransformer(DIR) and transformers.AutoModel load it)")
    train.set_defaults(command_name="train")

    report = command("report", "sensitivity tables and paired tests of a study", """\
Build the report of study NAME from the MLflow store: sensitivity tables (γ1 × α, sampler × K)
with each cell's 95% CI, paired per-query t-tests against the best cell and the space's baseline
(corrected across each table), the minimum detectable difference, the configurations tied with
the best, heatmaps and trial timings; print the tables and write them to kd-studies/NAME/report/
(or --out).""", ray=False)
    report.add_argument("name", metavar="NAME", nargs="?", help="study (omit with --document)")
    report.add_argument("--document", metavar="SPEC.yaml",
                        help="write a results document over several studies instead (e.g. docs/results_v3.yaml: "
                             "studies, metrics, grid-vs-search comparisons, bench tables, discussion)")
    report.add_argument("--metric", help="metric of the tables (default: the study's)")
    report.add_argument("--correction", **CORRECTION_OPTION)
    report.add_argument("-o", "--out", metavar="DIR", help="output folder (default: kd-studies/NAME/report)")
    report.set_defaults(command_name="report")

    export = command("export", "write the best trial's config (and its model)", """\
Write the full trial config of study NAME's best finished trial (by --metric) to a YAML that
`kd-study train` runs as is; with --model, also its trained student as a folder that
sentence-transformers and transformers load (pooling, normalisation and similarity as trained);
with --register, also a new version of a registered model in the MLflow model registry.""", ray=False)
    export.add_argument("name", metavar="NAME", help="the study whose best trial to export")
    export.add_argument("--metric", help="metric to rank trials by (default: the study's)")
    export.add_argument("--mode", choices=("max", "min"),
                        help="higher or lower is better (default: the study's mode for its metric, else max)")
    export.add_argument("--tied", metavar="DIR",
                        help="also write every configuration statistically tied with the best to DIR "
                             "(a trial YAML each, and tied.csv with their means and 95%% CIs)")
    export.add_argument("--correction", **CORRECTION_OPTION)
    export.add_argument("-o", "--out", metavar="PATH", help="output file (default: kd-studies/NAME/best.yaml)")
    export.add_argument("--model", metavar="DIR",
                        help="write the best trial's student to DIR: SentenceTransformer(DIR), AutoModel(DIR)")
    export.add_argument("--register", metavar="MODEL_NAME",
                        help="log the student (sentence_transformers flavour) as a new version of MODEL_NAME in "
                             "the MLflow model registry, with the trial's metrics as tags")
    export.set_defaults(command_name="export")

    confirm = command("confirm", "re-run a study's top points at a higher fidelity; rank correlation", """\
Re-run the top N points of study NAME (by its objective, mean over seeds) as a child study logged
under NAME's parent run: full corpus (eval.subset_distractors: null) and longer training (twice
the sweep's epochs or max_steps unless --epochs/--max-steps say otherwise), each point with
--replicates seeds. Then print and write (kd-studies/NAME/confirm/) the sweep's and the
confirmation's means per point, Kendall's τ between them with a bootstrap interval, and the
confirmed set of points tied with the best.""")
    confirm.add_argument("name", metavar="NAME", help="the study to confirm (its folder in --root)")
    confirm.add_argument("--top", type=int, default=3, metavar="N", help="points to re-run (default: 3)")
    confirm.add_argument("--replicates", type=int, metavar="S",
                         help="seeds per point (default: the study's study.replicates)")
    confirm.add_argument("--epochs", type=int, metavar="E", help="training epochs of the confirmation")
    confirm.add_argument("--max-steps", type=int, metavar="M", help="training steps of the confirmation")
    confirm.add_argument("--name", dest="child", metavar="CHILD", help="the child study's name (default: NAME-confirm)")
    confirm.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="pin",
                         help="fix a trial config field in the confirmation (YAML value), e.g. --set eval.top_k=100")
    _verbosity_options(confirm)
    confirm.set_defaults(command_name="confirm")
    return parser


def _verbosity_options(parser: argparse.ArgumentParser, quiet: bool = True) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--verbose", action="store_true",
                       help="show Ray's, Tune's, MLflow's, transformers' and faiss' log lines here too (by default "
                            "they go to logs/ in the study or run folder)")
    if quiet:
        group.add_argument("--quiet", action="store_true",
                           help="no live status line: only a line per trial start and end")


class _VersionAction(argparse.Action):
    """`--version`: computed when asked (it imports torch and faiss), not when the parser is built."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from study.run.versions import version_text

        print(version_text())
        parser.exit()
