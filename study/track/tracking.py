"""MLflow tracking of a study: one parent run per study, one nested run per trial.

The contract other tools read (study.report, study.report.export, the MLflow UI); every name is a
constant of study.track.tags:
- parent run: tags STUDY_NAME_TAG = <NAME>, STUDY_KIND_TAG = STUDY_KIND, GIT_SHA_TAG, STUDY_DIR_TAG,
  ALGORITHM_TAG, METRIC_TAG and the asset keys (ASSET_TAG_PREFIX + <part>); params: the space file
  flattened (`study.*`, `search.*`, `fixed.*`; a dict such as `study.baseline`, STUDY_BASELINE_PARAM,
  as JSON, which the report reads back as the baseline of its contrasts); artifacts: the study folder's space copy, resolved
  space and assets record (study.paths), and REPORT_ARTIFACT_DIR at the end.
- trial runs: tag PARENT_RUN_TAG (so the UI nests them), STUDY_KIND_TAG, STUDY_NAME_TAG,
  TRIAL_ID_TAG, SEARCHED_TAG and the TAG_FALLBACKS of sampler, loss and K; params: every field of
  the FULL trial config under its dotted name (`loss.gamma1`, `sampler.k`, ...); every reported
  metric with its training step (final metrics at the last step); artifacts TRIAL_CONFIG_ARTIFACT,
  PER_QUERY_ARTIFACT and, with --log-models, STUDENT_ARTIFACT_DIR. Status FINISHED only for a
  trial that finished training and evaluation; KILLED (+ STATE_TAG pruned) when the scheduler
  stopped it early; FAILED (+ ERROR_TAG) on an error. study.track.trial_runs writes them. Also
  STUDY_RUN_TAG (the parent run), POINT_TAG and REPLICATE_TAG (study.replicates).
- point runs (`study.replicates` > 1 only): STUDY_KIND_TAG = POINT_KIND, nested under the parent;
  the seed (trial) runs of the point nest under it instead of the parent; params: the point's
  config without its seed; metrics: each final metric's mean over seeds, its 95% interval, n.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from trainables import outputs
from trainables.errors import BadInput

from study.track.tags import (
    ENDED_BY_TAG, EXPERIMENT_KIND_TAG, GIT_SHA_TAG, MODEL_TRAINING_KIND, PARENT_RUN_TAG, STATE_FAILED, STATE_INTERRUPTED,
    STATE_TAG, STUDY_KIND,
    STUDY_KIND_TAG, STUDY_NAME_TAG, STUDY_RUN_TAG,
)

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
FINAL_METRIC_MARKER = outputs.FINAL_LOSS   # only the trial's final report carries it
# Tune bookkeeping that is not a training metric.
_TUNE_KEYS = {
    "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "time_since_restore",
    "iterations_since_restore", "timesteps_total", "timesteps_since_restore", "episodes_total",
    "episode_reward_mean", "done", "pid", "should_checkpoint", "checkpoint_dir_name", "step",
}


class TrackingError(BadInput):
    """The tracking store cannot be used; the message is one line."""


class NoStoreError(TrackingError):
    """A sqlite store that does not exist, where a command only reads (it would create an empty one)."""


# `scheme://user:password@` (the password may hold '@': the last one before the host ends it) and
# secret-looking query parameters (`?password=`, SQLAlchemy and MLflow both accept them).
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*):[^\s/?#]*@")
_QUERY_SECRET = re.compile(r"(?P<head>[?&](?:password|passwd|pwd|token|access_token|api_key|secret)=)[^&\s#'\"]+",
                           re.IGNORECASE)


def redact(text: str) -> str:
    """`text` (a URI, or a message holding URIs) with passwords shown as `***`: `http://user:***@host`.

    Every URI kd-study prints, logs or tags goes through here; the stored study state keeps the real
    one (resume needs it) in a study.json only its owner can read.
    """
    text = _URI_PASSWORD.sub(r"\g<head>:***@", str(text))
    return _QUERY_SECRET.sub(r"\g<head>***", text)


# ---- the store -----------------------------------------------------------------------------------
def resolve_tracking_uri(uri: str | None) -> str:
    """Default `sqlite:///mlruns.db`; a relative sqlite path is made absolute (trials and `resume` may run elsewhere)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:":
            uri = "sqlite:///" + str(Path(path).expanduser().resolve())
    return uri


def check_tracking(uri: str, timeout: float = 5.0, *, create: bool = True) -> None:
    """Fail fast (one line) when the store cannot be reached; creates a sqlite store if needed.

    `create=False` (commands that only read studies): a sqlite store that does not exist yet is an
    error, not a new empty file.
    """
    shown = redact(uri)
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.RequestException as error:
            reason = type(error).__name__
            if isinstance(error, requests.ConnectionError):
                reason = "connection refused or host unreachable"
            elif isinstance(error, requests.Timeout):
                reason = f"no answer within {timeout:g} s"
            raise TrackingError(f"MLflow tracking server {shown} is unreachable ({reason})") from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.parent.is_dir():
            raise TrackingError(f"MLflow tracking store {shown}: folder {path.parent} does not exist")
        if not create and not path.is_file():
            raise NoStoreError(f"MLflow tracking store {shown} does not exist (no study has logged to it; "
                                "--tracking-uri names the store a study used)")
    for attempt in range(3):
        try:
            with _quiet_store_setup():
                client(uri).search_experiments(max_results=1)
            return
        except Exception as error:  # noqa: BLE001 - any store failure is reported as one line
            # Two processes creating one new sqlite store race on its tables: try again.
            if attempt == 2 or not uri.startswith("sqlite:"):
                raise TrackingError(f"MLflow tracking store {shown} is not usable: "
                                    f"{redact(_first_line(error))}") from None
            time.sleep(1 + attempt)


@contextlib.contextmanager
def _quiet_store_setup():
    """MLflow announces creating/upgrading a sqlite store's tables on INFO: not news for a CLI user."""
    logger = logging.getLogger("mlflow.store.db.utils")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    if redact(uri) != uri:
        # MLflow prints "View run ... at: <the store's URL>" when a run ends: with the password in it.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    return MlflowClient(tracking_uri=uri)


def experiment_id_for(mlflow_client, name: str) -> str:
    """The experiment `name` (restored if deleted, created if missing), marked as model training.

    The kind tag says these are model-training runs, not GenAI traces: MLflow 3 UIs that read it open
    the runs table (3.17 decides by its own GenAI / Model-training switch; the README says how).
    A kind someone set by hand is kept.
    """
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        return mlflow_client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
    if experiment.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(experiment.experiment_id)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        mlflow_client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return experiment.experiment_id


def git_revision(path: str | Path | None = None) -> str:
    """`<sha>` of the checkout holding the code (`<sha>-dirty` with local changes), or `unknown`."""
    where = str(path or Path(__file__).resolve().parents[1])
    try:
        sha = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def start_parent_run(uri: str, experiment_name: str, study_name: str, *, space_params: Mapping[str, Any],
                     tags: Mapping[str, str], artifacts: list[Path],
                     metrics: Mapping[str, float] | None = None) -> tuple[str, str]:
    """Create the study's parent run (with `metrics`: the reference points, step 0); returns (experiment_id, run_id)."""
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    mlflow_client = client(uri)
    experiment_id = experiment_id_for(mlflow_client, experiment_name)
    sha = tags.get(GIT_SHA_TAG, "unknown")
    run = mlflow_client.create_run(experiment_id, run_name=study_name, tags={
        STUDY_NAME_TAG: study_name, STUDY_KIND_TAG: STUDY_KIND,
        **({MLFLOW_GIT_COMMIT: sha.removesuffix("-dirty")} if sha != "unknown" else {}),
        **tags,
    })
    run_id = run.info.run_id
    log_params(mlflow_client, run_id, space_params)
    for key, value in (metrics or {}).items():
        mlflow_client.log_metric(run_id, key, float(value), step=0)
    for path in artifacts:
        if path.is_file():
            mlflow_client.log_artifact(run_id, str(path))
    return experiment_id, run_id


def reopen_run(uri: str, run_id: str) -> None:
    client(uri).update_run(run_id, status="RUNNING")


def end_run(uri: str, run_id: str, status: str) -> None:
    mlflow_client = client(uri)
    mlflow_client.set_terminated(run_id, status=status)


def end_open_trial_runs(uri: str, parent_run_id: str, status: str = "KILLED", *, reason: str | None = None) -> int:
    """Close trial runs left RUNNING by an interrupted, failed or killed driver; the trials that resume re-open theirs.

    KILLED runs get STATE_TAG interrupted, FAILED ones failed; `reason` goes into ENDED_BY_TAG.
    """
    mlflow_client = client(uri)
    parent = mlflow_client.get_run(parent_run_id)
    runs = {r.info.run_id: r for tag in (PARENT_RUN_TAG, STUDY_RUN_TAG)   # seed runs nest under point runs
            for r in mlflow_client.search_runs([parent.info.experiment_id],
                                               f"tags.`{tag}` = '{parent_run_id}' and attributes.status = 'RUNNING'")}
    runs = list(runs.values())
    for run in runs:
        mlflow_client.set_tag(run.info.run_id, STATE_TAG, STATE_INTERRUPTED if status == "KILLED" else STATE_FAILED)
        if reason:
            mlflow_client.set_tag(run.info.run_id, ENDED_BY_TAG, reason[:5000])
        mlflow_client.set_terminated(run.info.run_id, status=status)
    return len(runs)


def log_params(mlflow_client, run_id: str, params: Mapping[str, Any]) -> None:
    """Params in batches of 100 (the MLflow limit), values as strings (`None` → "None", lists as JSON)."""
    from mlflow.entities import Param

    items = [Param(k[:250], _param_value(v)) for k, v in params.items()]
    for start in range(0, len(items), 100):
        mlflow_client.log_batch(run_id, params=items[start:start + 100])


def _param_value(value: Any) -> str:
    if isinstance(value, (list, dict)):
        text = json.dumps(value, sort_keys=True)
    else:
        text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The reported training/eval metrics of a Tune result (numbers only, Tune bookkeeping dropped)."""
    out = {}
    for key, value in result.items():
        if key in _TUNE_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key] = float(value)
    return out


def flat_config(cfg_json: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg_json.items():
        if isinstance(value, Mapping):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def trial_name(study_name: str, trial_id: str) -> str:
    """The `name` field of a trial's config (also its folder name under trials/)."""
    return f"{study_name}-{trial_id}"


def run_name(trial_id: str, cfg) -> str:
    label = f"{cfg.loss.name}"
    if cfg.loss.name == "wkl":
        label += f"(γ1={cfg.loss.gamma1:g},α={cfg.loss.alpha:g})"
    return f"{trial_id} {label} {cfg.sampler.name} k={cfg.sampler.k}"


def trial_error_line(trial) -> str:
    """One line saying why a Tune trial failed (the last line of its error, where Ray puts the cause)."""
    text = ""
    path = getattr(trial, "error_file", None) or ""
    try:
        if path and Path(path).is_file():
            text = Path(path).read_text()
    except OSError:
        text = ""
    text = text or str(getattr(trial, "error_msg", "") or "")
    return cause_line(text) or "unknown error"


def cause_line(text: str) -> str:
    """The line of an error's text that says why (credentials in URIs redacted): what the CLI and ERROR_TAG show."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    # Ray appends the trainable's own exception last; skip trailing Ray boilerplate.
    for line in reversed(lines):
        if not line.startswith(("File ", "^", "~", "The above exception", "Traceback")):
            return redact(line)
    return redact(lines[-1]) if lines else ""
