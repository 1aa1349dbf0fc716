"""`kd-study`: run, resume, train, report and export knowledge-distillation studies.

Thin on purpose: parse arguments into typed things (a loaded SearchSpace, StudyOptions), hand them
to study.run.runner / study.report / study.report.export, and print what they return with study.console.console.
Bad inputs (config, data, values, names, tracking store) end with one line `kd-study: error: ...` on
stderr and exit 2, before anything is created; a crashed trial or unreachable cluster with one line
and exit 1 (finished trials are kept); an interrupted study or training with the command that
continues it and exit 130 (Ctrl-C) or 143 (SIGTERM, what a cluster scheduler sends: handled alike).
run, resume and train send the libraries' log lines to the study's (run's) logs/ folder unless
--verbose (study.console.logs); a failure's traceback goes there too, and its one line says so.
How a command ends (those exit codes, the line that continues it, SIGTERM) is study.cli.exits; where
its study, state and store are, study.cli.lookup.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Iterator, Sequence

from trainables.config import ConfigError, TrialConfig, check_name
from trainables.errors import BadInput
from trainables.outputs import BEIR_NDCG_AT_10_AVG, DEV_MRR_AT_10

from study.cli import arguments, exits, lookup
from study.console import console
from study.cli.convert_scores import cmd_convert_scores
from study.paths import LOGS_DIR_NAME

build_parser = arguments.build_parser


def _options(args: argparse.Namespace, **extra: Any):
    from study.run.runner import StudyOptions

    return StudyOptions(root=getattr(args, "root", None), tracking_uri=getattr(args, "tracking_uri", None),
                        ray_address=getattr(args, "ray_address", None), num_cpus=getattr(args, "num_cpus", None),
                        storage=getattr(args, "storage", None), **extra)


def _space_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for flag, key in (("name", "study.name"), ("num_samples", "study.num_samples"),
                      ("max_concurrent_trials", "study.max_concurrent_trials"), ("scheduler", "study.scheduler"),
                      ("algorithm", "study.algorithm"), ("seed", "study.seed")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    return overrides


def _headline_objectives(space) -> dict[str, Any]:
    """--multi-objective: Dev MRR@10 and the BEIR nDCG@10 average as this space's trials name them
    (with the `_subset<N>` suffix of a subset evaluation)."""
    known = space.final_metric_keys()
    wanted = [key + space.base.eval.metric_suffix for key in (DEV_MRR_AT_10, BEIR_NDCG_AT_10_AVG)]
    missing = [key for key in wanted if key not in known]
    if missing:
        raise ConfigError(f"{space.source}: --multi-objective optimises {' and '.join(wanted)}, but trials of this "
                          f"space do not report {', '.join(missing)} (they report: {', '.join(known)}); "
                          "set study.objectives in the file instead")
    return {"study.objectives": [{"metric": key, "mode": "max"} for key in wanted], "study.metric": None}


def _pins(items: list[str]) -> dict[str, Any]:
    from study.space.pins import parse_pins

    return parse_pins(items)


def cmd_run(args: argparse.Namespace) -> int:
    from study.space.schema import load_space

    if args.name is not None:
        check_name(args.name, "--name")
    # Fail fast on a bad space, before the runner imports Ray; the runner runs the preflight checks.
    overrides, pins = _space_overrides(args), _pins(args.pin)
    space = load_space(args.space, overrides=overrides, pin=pins)
    if args.multi_objective:
        space = load_space(args.space, overrides={**overrides, **_headline_objectives(space)}, pin=pins)
    if args.dry_run:
        from trainables.preflight import preflight

        console.print_plan(space)
        for line in preflight(space.base, source=str(space.source)).lines():  # the data, models and folders
            print(f"  checked {line}")
        return 0
    from study.run.runner import run_study

    lookup.apply_storage(args, space)
    opts = _options(args, optuna_storage=args.optuna_storage, experiment=args.experiment,
                    log_models=args.log_models, report=not args.no_report, verbose=_verbosity(args))
    with _logs_to(lookup.study_dir(space.name, args) / LOGS_DIR_NAME, args):
        outcome = run_study(space, opts)
    return exits.finish(outcome, space.metrics, args)


def cmd_check(args: argparse.Namespace) -> int:
    from study.check.dimensions import check_space
    from study.check.report import raise_on_errors
    from study.check.scores import gather_evidence
    from study.space.schema import load_space

    space = load_space(args.space, pin=_pins(args.pin))
    # the model loaders' "Loading weights" bars are not a long step: the table is the output
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    report = check_space(space, gather_evidence(space, args.scores), n_sample=args.sample)
    console.print_check(report)
    raise_on_errors(report)   # exit 2 after the table, which says why
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from study.run.runner import resume_study

    check_name(args.name, "study name")
    opts = _options(args, report=not args.no_report, verbose=_verbosity(args))
    with _logs_to(lookup.study_dir(args.name, args) / LOGS_DIR_NAME, args):
        outcome = resume_study(args.name, opts)   # --log-models and the other run options come from the study
    return exits.finish(outcome, lookup.state_or_empty(args.name, args).get("metrics") or [], args)


def cmd_train(args: argparse.Namespace) -> int:
    if args.name is not None:
        check_name(args.name, "--name")
    cfg = TrialConfig.from_yaml(args.config)  # a bad config fails before Ray and torch load
    if args.model:
        _check_model_folder(args.model)       # before minutes of training, not after
    from study.run.single import train_single   # light; it checks the Ray address before any work

    run_dir = Path(args.output_dir or cfg.output_dir).expanduser().resolve() / (args.name or cfg.name)
    try:
        with _logs_to(run_dir / LOGS_DIR_NAME, args):
            cfg, result = train_single(args.config, _options(args, verbose=_verbosity(args)), name=args.name,
                                       output_dir=args.output_dir)
    except KeyboardInterrupt:
        # Ray Train keeps the run's checkpoints in <output_dir>/<name>/: the same command continues there.
        again = exits.command(args, "train", args.config, *(("--name", args.name) if args.name else ()),
                              *(("--output-dir", args.output_dir) if args.output_dir else ()))
        then = (f"to continue from its last checkpoint in {run_dir}" if run_dir.is_dir()
                else "to start it (it had not started training)")
        console.error(f"training {args.name or cfg.name} {exits.interrupted(args)}; run `{again}` again {then}")
        return exits.EXIT_INTERRUPTED
    console.print_trial_result(cfg.name, result)
    if args.model:
        from trainables.outputs import eval_metric_keys
        from trainables.models.st_export import write_sentence_transformer

        card = {"trial config": args.config, "run": cfg.name,
                **{k: f"{result.metrics[k]:.4f}" for k in eval_metric_keys(cfg.eval) if k in result.metrics}}
        folder = write_sentence_transformer(result.student_dir, args.model, card)
        print(f"model:      {folder}  (SentenceTransformer or transformers.AutoModel loads it)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from study.report import build_report, render_report, write_report

    if args.document:
        from study.report.document import write_document

        path = write_document(args.document, lookup.tracking_uri(args, {}, create=False), getattr(args, "root", None))
        print(f"document: {path}")
        return 0
    if not args.name:
        raise ConfigError("kd-study report: give a study NAME or --document SPEC.yaml")
    name = check_name(args.name, "study name")
    state, tracking_uri = lookup.find_study(name, args)
    out = Path(args.out) if args.out else lookup.study_dir(name, args) / "report"
    # built once (runs, tests, importances), then written and printed; metric defaults to the study's own
    report = build_report(name, tracking_uri, args.metric, state.get("optuna_storage"), correction=args.correction)
    path = write_report(report, out)
    render_report(report)
    print(f"report: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from study.report.export import export_best

    name = check_name(args.name, "study name")
    if args.model:
        _check_model_folder(args.model)
    _, tracking_uri = lookup.find_study(name, args)
    # made once the best trial is found
    out = Path(args.out) if args.out else lookup.study_dir(name, args) / "best.yaml"
    # metric and mode default to the study's own objective (export_best reads it from the parent run)
    path = export_best(name, tracking_uri, args.metric, out, mode=args.mode)
    if args.tied:
        from study.report.export import export_tied

        table = export_tied(name, tracking_uri, args.tied, args.metric, mode=args.mode, correction=args.correction)
        print(f"tied set:    {table.parent}  ({table.name}: every configuration tied with the best, with its CI)")
    print(f"best config: {path}  (run it: kd-study train {path})")
    if args.model or args.register:
        from study.report.export import export_best_model

        exported = export_best_model(name, tracking_uri, args.model, args.metric, mode=args.mode,
                                     register=args.register)
        if exported.folder is not None:
            print(f"best model:  {exported.folder}  (trial {exported.trial_id}; SentenceTransformer or "
                  "transformers.AutoModel loads it)")
        if exported.version is not None:
            print(f"registered:  models:/{args.register}/{exported.version.version}  (MLflow model registry, "
                  f"source run {exported.run_id})")
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    from study.run.confirm import child_name, confirm_study, table_rows, tau_line

    name = check_name(args.name, "study name")
    for flag in ("top", "replicates", "epochs", "max_steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} {value}: expected a positive number")
    opts = _options(args, verbose=_verbosity(args))
    with _logs_to(lookup.study_dir(child_name(name, args.child), args) / LOGS_DIR_NAME, args):
        result = confirm_study(name, opts, top=args.top, replicates=args.replicates, pins=_pins(args.pin),
                               epochs=args.epochs, max_steps=args.max_steps, child=args.child)
    code = exits.finish(result.outcome, [result.confirm_metric], args) if result.outcome is not None else 0
    if not result.rows:
        return code
    header, rows = table_rows(result)
    console.table(f"confirmation of {name} ({result.child})", header, rows)
    print(tau_line(result))
    print(f"tied with the best: {', '.join(r['point'] for r in result.rows if r['tied']) or 'none'} ({result.tied_test})")
    print(f"confirmation: {result.files[0]}" if result.files else "")
    return code


COMMANDS = {"run": cmd_run, "check": cmd_check, "resume": cmd_resume, "train": cmd_train, "report": cmd_report,
            "export": cmd_export, "confirm": cmd_confirm, "convert-scores": cmd_convert_scores}


# ---- helpers ---------------------------------------------------------------------------------------
def _verbosity(args: argparse.Namespace) -> int:
    if getattr(args, "verbose", False):
        return console.VERBOSE
    return console.QUIET if getattr(args, "quiet", False) else console.NORMAL


@contextlib.contextmanager
def _logs_to(folder: Path, args: argparse.Namespace) -> Iterator[None]:
    """The libraries' log lines into `folder` for the command (not with --verbose); the console says where.

    A failure that is not bad input leaves its traceback there, and `args.traceback_log` names the
    file for the error line (unless the run's folder never existed: then the console gets it).
    """
    if getattr(args, "verbose", False):
        yield
        return
    from study.console import logs

    with logs.routed(folder) as routing:
        print(f"{console.PROG}: logs: {exits.shown(folder)}/ (Ray, Tune, MLflow, transformers, faiss; "
              "--verbose shows them here)", flush=True)
        try:
            yield
        except BadInput:
            raise   # one line says it all
        except Exception as error:
            if routing.log_exception(error):
                args.traceback_log = routing.driver_log
            raise


def _check_model_folder(folder: str) -> None:
    """--model DIR: a new, empty or earlier-exported folder (an export replaces only its own kind)."""
    from trainables.models.st_export import check_model_folder

    try:
        check_model_folder(folder)
    except FileExistsError as error:
        raise ConfigError(f"--model: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.sigterm = exits.Sigterm()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, args.sigterm) if main_thread else None
    try:
        code = _run(args)
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return exits.EXIT_TERMINATED if code == exits.EXIT_INTERRUPTED and args.sigterm.received else code


def _run(args: argparse.Namespace) -> int:
    """The command, its errors as one line and an exit status."""
    from trainables.errors import KdStudyError

    try:
        from study.run.preflight import check_global_options

        check_global_options(getattr(args, "num_cpus", None), getattr(args, "ray_address", None))
        lookup.apply_storage(args)
        return int(COMMANDS[args.command_name](args) or 0)
    except KeyboardInterrupt:
        console.error(exits.interrupted(args))
        return exits.EXIT_INTERRUPTED
    except KdStudyError as error:  # BadInput → 2, Failure → 1: one line, the cause says what to do
        # a Ray-wrapped error carries the worker's traceback: keep its last line (the rest is in the log)
        logged = getattr(args, "traceback_log", None)
        console.error(exits.cause(error) + (f" (traceback: {exits.shown(logged)})" if logged else ""))
        return error.exit_code
    except Exception as error:  # noqa: BLE001 - a bug, not bad input: the traceback, then one line
        from trainables.disk import disk_full, is_disk_full

        if is_disk_full(error):   # a full disk anywhere (assets, a log, Tune's snapshot): the path, exit 2
            full = disk_full(Path.cwd(), error)
            console.error(str(full))
            return full.exit_code
        logged = getattr(args, "traceback_log", None)
        if logged:
            console.error(f"internal error: {exits.cause(error)} (a bug in kd-study: the traceback is in "
                          f"{exits.shown(logged)})")
        else:
            traceback.print_exc(file=sys.stderr)
            console.error(f"internal error: {exits.cause(error)} (a bug in kd-study: the traceback is above)")
        return exits.EXIT_FAILED

