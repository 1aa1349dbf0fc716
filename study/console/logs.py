"""Where the libraries' log lines go: a `logs/` folder beside the run, so the console shows kd-study's own.

Ray, Tune, Ray Train, Optuna, MLflow, transformers and faiss print a great deal: over a thousand
lines for the 6-trial quickstart, hundreds of them Ray Train's placement-group cleaner warning every
second or two that it cannot query the controller (it polls the State API, which needs the dashboard
that kd-study's local Ray does not start). By default a command routes them to

    logs/driver.log    the driver's Python logging (every library, kd-study's own) and tracebacks
    logs/workers.log   what the Ray processes print (Tune trial actors, Ray Train controllers and
                       workers, faiss and transformers inside them), one line per line, prefixed
                       `(ActorName pid=N)` as Ray would have shown it

while the console keeps kd-study's lines and its warnings (the `study` and `trainables` loggers
at WARNING), and Ray's autoscaler events (a resource request that cannot be scheduled). The files
appear once the run's folder exists: a command that fails before it leaves nothing behind.
`--verbose` leaves everything on the console, as before. Routing is process-wide, like logging's
own configuration: the CLI routes around one command (`routed`) and restores the loggers after.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

from study import compat

DRIVER_LOG = "driver.log"
WORKERS_LOG = "workers.log"
# Libraries that put their own stderr handler on their top logger (and stop propagation) when
# imported: routed by removing it and propagating to the root, which holds the file; again once
# Ray, and then the rest, are imported (route_libraries).
_OWN_HANDLER_LOGGERS = ("ray", "optuna", "mlflow", "transformers")
_KD_STUDY_LOGGERS = ("study", "trainables")   # their warnings stay on the console
_QUIET_ENV = {
    # the model loaders' progress bars (transformers' "Loading weights", per model): not a long step
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # Tune's new output engine prints an experiment box and its result paths even at verbose=0; the
    # old one, at 0, only logs (study.run.tuner sets verbose=0 unless --verbose)
    "RAY_AIR_NEW_OUTPUT": "0",
}
_WORKERS_HANDLER = "kd_study_workers_log"
_RAY_TQDM_MAGIC = "__ray_tqdm_magic_token__"  # ray.experimental.tqdm_ray's bar updates: not lines

_CONSOLE_LINE = "kd-study: "                   # a Ray process's line meant for the console
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

_active: "LogRouting | None" = None


class LogRouting:
    """The routing of one command: library logs to `folder`/driver.log, Ray's worker output to workers.log."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.driver_log = self.folder / DRIVER_LOG
        self.workers_log = self.folder / WORKERS_LOG
        self._routed: dict[logging.Logger, tuple[list[logging.Handler], bool]] = {}   # handlers taken, propagate
        self._levels: dict[logging.Logger, int] = {}
        self._saved_env: dict[str, str | None] = {}
        self._driver_file = _DeferredFile(self.driver_log)
        self._file = _FileHandler(self._driver_file)
        self._console = logging.StreamHandler(_Stderr())
        self._workers_file = _DeferredFile(self.workers_log)
        self._workers = _WorkersLog(self._workers_file)
        self._ray_printer = None   # Ray's console printer of worker output, while the file has its place
        self._ray_error_printer = None   # ... and of the raylet's error messages

    def start(self) -> None:
        for key, value in _QUIET_ENV.items():  # before transformers is imported: it reads it then
            self._saved_env[key] = os.environ.get(key)
            os.environ.setdefault(key, value)
        self._file.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._file.setLevel(logging.INFO)
        self._console.setFormatter(_ConsoleFormatter())
        self._console.setLevel(logging.WARNING)
        root = logging.getLogger()
        self._levels[root] = root.level
        root.addHandler(self._file)
        root.setLevel(logging.INFO)
        for name in _KD_STUDY_LOGGERS:
            logging.getLogger(name).addHandler(self._console)
        logging.captureWarnings(True)   # libraries' warnings.warn (deprecations): to the file
        self.route_libraries()

    def route_libraries(self) -> None:
        """The libraries imported so far that print through their own handler: to the root (the file) instead.

        Again after ray.init (capture_ray_output), when the libraries a run needs are imported, not
        before: the CLI's checks of bad inputs must fail in seconds, without those imports.
        """
        for name in _OWN_HANDLER_LOGGERS:
            logger = logging.getLogger(name)
            printing = [h for h in logger.handlers if _writes_to_console(h)]
            if logger not in self._routed:
                self._routed[logger] = ([], logger.propagate)
            self._routed[logger][0].extend(printing)
            logger.handlers = [h for h in logger.handlers if h not in printing]
            logger.propagate = True

    def stop(self) -> None:
        self._release_ray_output()
        logging.captureWarnings(False)
        for logger, (removed, propagate) in self._routed.items():
            logger.handlers = [*removed, *(h for h in logger.handlers if h not in removed)]
            logger.propagate = propagate
        self._routed.clear()
        for name in _KD_STUDY_LOGGERS:
            logging.getLogger(name).removeHandler(self._console)
        root = logging.getLogger()
        root.removeHandler(self._file)
        for logger, level in self._levels.items():
            logger.setLevel(level)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._file.close()
        self._driver_file.close()
        self._workers_file.close()

    def capture_ray_output(self) -> bool:
        """Ray's worker output to workers.log instead of the console; False where this Ray cannot (then unchanged).

        Ray forwards what its processes print to the driver through one dispatcher (log_to_driver);
        its console printer is swapped for the file (study.compat names Ray's private parts). Also
        the libraries a run imports by now are routed: optuna, mlflow, transformers.
        """
        _import_libraries()
        self.route_libraries()
        try:
            dispatcher = compat.worker_output_dispatcher()
            console_printer = dict(dispatcher.handlers).get(compat.RAY_CONSOLE_PRINTER)
        except (ImportError, AttributeError):
            return False
        if console_printer is None:   # log_to_driver=False: nothing reaches the console anyway
            return False
        self._workers.autoscaler = self._ray_printer = console_printer
        dispatcher.remove_handler(compat.RAY_CONSOLE_PRINTER)
        dispatcher.add_handler(_WORKERS_HANDLER, self._workers.write_batch)
        # The raylet's error lines ("A worker died…", in colour) bypass the dispatcher: to the file as well;
        # the trial's own line says what happened (trainables.train.attempts).
        self._ray_error_printer = compat.swap_raylet_error_printer(self._workers.write_error)
        self.driver_log_line(f"Ray workers' output: {self.workers_log}; Ray's own log files: "
                             f"{compat.ray_logs_dir()}")
        return True

    def _release_ray_output(self) -> None:
        """Ray's console printer back if Ray still runs (ray.shutdown removes it otherwise); the file's handler off."""
        if self._ray_printer is None:
            return
        import ray

        dispatcher = compat.worker_output_dispatcher()
        dispatcher.remove_handler(_WORKERS_HANDLER)
        if self._ray_error_printer is not None:
            compat.swap_raylet_error_printer(self._ray_error_printer)
            self._ray_error_printer = None
        if ray.is_initialized() and compat.RAY_CONSOLE_PRINTER not in dict(dispatcher.handlers):
            dispatcher.add_handler(compat.RAY_CONSOLE_PRINTER, self._ray_printer)
        self._ray_printer = None

    def driver_log_line(self, message: str) -> None:
        logging.getLogger("kd_study.logs").info(message)

    def log_exception(self, error: BaseException) -> bool:
        """The traceback of `error` into driver.log; False when it is not there (the run's folder never existed)."""
        logging.getLogger("kd_study").error("%s: %s", type(error).__name__, error, exc_info=error)
        return self._driver_file.written()


@contextlib.contextmanager
def routed(folder: Path | None) -> Iterator[LogRouting | None]:
    """Route the libraries' logs to `folder` for the duration (None: leave them on the console, --verbose)."""
    global _active
    if folder is None:
        yield None
        return
    routing = LogRouting(folder)
    routing.start()
    _active = routing
    try:
        yield routing
    finally:
        _active = None
        routing.stop()


def active() -> LogRouting | None:
    """The routing in effect (None under --verbose or outside a command)."""
    return _active


def route_libraries() -> None:
    """Called right before ray.init, once Ray is imported: its start-up lines go to the file too (if routing)."""
    if _active is not None:
        _active.route_libraries()


def capture_ray_output() -> bool:
    """Called right after ray.init: Ray's worker output goes to the routing's workers.log (if routing)."""
    return _active.capture_ray_output() if _active is not None else False


def quiet_env() -> dict[str, str]:
    """Environment for the Ray processes while routing (their model loaders draw no progress bars)."""
    return dict(_QUIET_ENV) if _active is not None else {}


# ---- pieces -------------------------------------------------------------------------------------------
def _import_libraries() -> None:
    """Those the run imports anyway, now: each installs its console handler when imported."""
    for module in ("optuna", "mlflow", "transformers.utils.logging"):
        try:
            __import__(module)
        except ImportError:  # pragma: no cover - all are dependencies
            pass


def _writes_to_console(handler: logging.Handler) -> bool:
    """A library's own stream handler (stderr, or whatever sys.stderr is at emit time, as Ray's): not a file."""
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


class _Stderr:
    """sys.stderr as it is when written to (pytest and redirections swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _ConsoleFormatter(logging.Formatter):
    """`kd-study: warning: ...`, like the CLI's other lines."""

    def format(self, record: logging.LogRecord) -> str:
        return f"kd-study: {record.levelname.lower()}: {record.getMessage()}"


class _DeferredFile:
    """A log file in a run's `logs/` folder, written once the run's folder exists; until then, lines wait here.

    So a command that fails before its study (or run) folder is made leaves nothing behind, and one
    whose folder is removed (a study that never started) loses only these lines.
    """

    MAX_WAITING = 20_000   # lines held before the folder exists (a fast failure logs a few dozen)

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = None
        self._waiting: list[str] = []
        self._lock = threading.Lock()
        self._closed = False

    def write(self, text: str) -> None:
        with self._lock:
            if self._closed:   # a line from a thread that outlived the command
                return
            if self._file is None and self.path.parent.parent.is_dir():
                self.path.parent.mkdir(exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")   # noqa: SIM115 - closed in close()
                self._file.write("".join(self._waiting))
                self._waiting.clear()
            if self._file is not None:
                try:
                    self._file.write(text)
                    self._file.flush()
                except OSError:   # a full disk: these lines are lost, the command's own line says why
                    pass
            elif len(self._waiting) < self.MAX_WAITING:
                self._waiting.append(text)

    def written(self) -> bool:
        """Is this file on disk now (its folder was made and not removed since)?"""
        with self._lock:
            return self._file is not None and self.path.is_file()

    def close(self) -> None:
        """Closed for good; lines still waiting are written if the folder exists by now."""
        if self._waiting and not self._closed:
            self.write("")
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
            self._waiting.clear()
            self._closed = True


class _FileHandler(logging.Handler):
    """logging into a _DeferredFile."""

    def __init__(self, file: _DeferredFile):
        super().__init__()
        self.file = file

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.file.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must not break the command
            self.handleError(record)


class _RedactingFormatter(logging.Formatter):
    """Passwords in URIs redacted: a library's message may quote the tracking or Optuna store."""

    def format(self, record: logging.LogRecord) -> str:
        from study.track.tracking import redact

        return redact(super().format(record))


class _WorkersLog:
    """Ray's forwarded worker output, appended to a file as `(Actor pid=N) line`; autoscaler events to the console."""

    def __init__(self, file: _DeferredFile):
        self.file = file
        self.autoscaler = None     # Ray's own console printer, for the autoscaler's events

    def write_batch(self, data: dict[str, Any]) -> None:
        if data.get("pid") == "autoscaler":
            if self.autoscaler is not None:
                self.autoscaler(data)
            return
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who + ' ' if who else ''}pid={data.get('pid')}) "
        lines = [_ANSI.sub("", line) for line in data.get("lines", []) if _RAY_TQDM_MAGIC not in line]
        if lines:
            self.file.write("".join(prefix + line + "\n" for line in lines))
        for line in lines:   # a trial's own line (trainables.train.attempts: a worker failed; a lease waited)
            if line.startswith(_CONSOLE_LINE):
                print(line, file=sys.stderr, flush=True)

    def write_error(self, data: dict[str, Any], ignore_prefix: bool = False) -> None:
        """A raylet error message (`pid` "raylet"), to the file without its colour codes."""
        self.write_batch({**data, "pid": data.get("pid", "raylet")})
