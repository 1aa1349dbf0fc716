"""Log routing (study.console.logs): the libraries' lines go to the run's logs/ folder, kd-study's own stay on the console."""
from __future__ import annotations

import io
import logging

import pytest

from study.console import logs

CLEANER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
POLL_WARNING = ("Failed to query Ray Train Controller actor state. State API may be temporarily unavailable. "
                "Continuing to monitor.")


@pytest.fixture
def study_dir(tmp_path):
    folder = tmp_path / "kd-studies" / "s"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def ray_console():
    """What Ray's own stderr handler on the "ray" logger prints (a stand-in beside it: Ray's writes to the
    stderr of its import time, which pytest's capture may have swapped since)."""
    import ray  # noqa: F401 - installs Ray's handler, as in a run

    console = io.StringIO()
    handler = logging.StreamHandler(console)
    logging.getLogger("ray").addHandler(handler)
    try:
        yield console
    finally:
        logging.getLogger("ray").removeHandler(handler)


def test_ray_train_faiss_and_transformers_lines_go_to_the_driver_log_not_the_console(study_dir, ray_console,
                                                                                     capsys):
    import transformers.utils.logging as transformers_logging

    with logs.routed(study_dir / "logs") as routing:
        assert not [h for h in logging.getLogger("ray").handlers          # no console handler left (files stay)
                    if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
        logging.getLogger(CLEANER).warning(POLL_WARNING)
        logging.getLogger("ray.tune.tune").info("Total run time: 3.2 seconds")
        logging.getLogger("faiss.loader").info("Loading faiss with AVX2 support.")
        transformers_logging.get_logger("transformers.modeling_utils").warning("Some weights were not used")
    out, err = capsys.readouterr()
    assert out + err + ray_console.getvalue() == ""
    text = routing.driver_log.read_text()
    for line in (POLL_WARNING, "Total run time", "Loading faiss with AVX2 support.", "Some weights were not used"):
        assert line in text
    assert f"WARNING {CLEANER}: {POLL_WARNING}" in text             # level and logger name kept

    logging.getLogger(CLEANER).warning("after the command")           # the loggers are as they were
    assert "after the command" in ray_console.getvalue()
    assert "after the command" not in routing.driver_log.read_text()


def test_verbose_routes_nothing(study_dir, ray_console):
    with logs.routed(None) as routing:
        assert routing is None and logs.active() is None
        logging.getLogger(CLEANER).warning(POLL_WARNING)
    assert POLL_WARNING in ray_console.getvalue()
    assert not (study_dir / "logs").exists()


def test_kd_studys_own_warnings_stay_on_the_console(study_dir, capsys):
    with logs.routed(study_dir / "logs") as routing:
        logging.getLogger("trainables.data.beir").warning("scifact/test: skipped 3 (qrels docid not in corpus)")
        logging.getLogger("trainables.prepare.assets").info("pools built")   # info: the file only
    err = capsys.readouterr().err
    assert err == "kd-study: warning: scifact/test: skipped 3 (qrels docid not in corpus)\n"
    text = routing.driver_log.read_text()
    assert "skipped 3" in text and "pools built" in text


def test_nothing_is_written_before_the_run_folder_exists(tmp_path):
    """A command that fails before its study folder exists leaves nothing behind; once it exists, nothing is lost."""
    study = tmp_path / "kd-studies" / "late"
    with logs.routed(study / "logs") as routing:
        logging.getLogger("ray.tune").info("before the study folder")
        assert not (tmp_path / "kd-studies").exists()
        study.mkdir(parents=True)                      # the runner makes it
        logging.getLogger("ray.tune").info("after")
    assert routing.driver_log.read_text().count("before the study folder") == 1


def test_lines_waiting_for_the_run_folder_are_written_when_the_command_ends(tmp_path):
    """`kd-study train`: Ray Train makes the run folder late, and the driver may log nothing after that."""
    run = tmp_path / "runs" / "t"
    with logs.routed(run / "logs") as routing:
        logging.getLogger("ray").info("Started a local Ray instance.")
        run.mkdir(parents=True)
    assert "Started a local Ray instance." in routing.driver_log.read_text()


def test_passwords_in_logged_uris_are_redacted(study_dir):
    with logs.routed(study_dir / "logs") as routing:
        logging.getLogger("mlflow.store").info("connecting to postgresql://me:secret@db:5432/mlflow")
    text = routing.driver_log.read_text()
    assert "secret" not in text and "postgresql://me:***@db:5432/mlflow" in text


def test_ray_worker_output_goes_to_workers_log_and_autoscaler_events_to_the_console(study_dir):
    """What ray.init(log_to_driver=True) forwards: the trials' lines into workers.log; Ray's printer kept for
    the autoscaler's events (a request that cannot be scheduled is a hang the user must see)."""
    from ray._private import worker as ray_worker

    dispatcher = ray_worker.global_worker_stdstream_dispatcher
    printed = []
    dispatcher.add_handler("ray_print_logs", printed.append)          # as ray.init installs it
    try:
        with logs.routed(study_dir / "logs") as routing:
            assert logs.capture_ray_output()
            dispatcher.emit({"pid": 123, "actor_name": "PlacementGroupCleaner", "lines": [POLL_WARNING] * 3})
            dispatcher.emit({"pid": 7, "task_name": "", "lines": ["Loading faiss.", "__ray_tqdm_magic_token__{}"]})
            event = {"pid": "autoscaler", "lines": ["Warning: The following resource request cannot be scheduled"]}
            dispatcher.emit(event)
        assert printed == [event]
        lines = routing.workers_log.read_text().splitlines()
        assert lines == [f"(PlacementGroupCleaner pid=123) {POLL_WARNING}"] * 3 + ["(pid=7) Loading faiss."]
        assert "ray_print_logs" not in dict(dispatcher.handlers)       # Ray is not running: ray.shutdown's job
        assert logs.WORKERS_LOG and not any(name.startswith("kd_study") for name, _ in dispatcher.handlers)
    finally:
        dispatcher.remove_handler("ray_print_logs")
