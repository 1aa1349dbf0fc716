"""Register an exported student in the MLflow model registry, as a sentence-transformers model.

The model is logged with MLflow's `sentence_transformers` flavour as a LoggedModel of the study's
experiment whose source run is the trial's run (so the registry links back to the trial; the
trial run itself is not reopened: its status and times stay as the study left them), then
registered as a new version of `model_name` with the trial's metrics as version tags and a
one-paragraph description. `mlflow.sentence_transformers.load_model("models:/NAME/VERSION")` and
`mlflow.pyfunc.load_model(...)` (predict → embeddings) read it back. Works on the default sqlite
store and on a tracking server.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator, Mapping

from study.track.tags import STUDY_NAME_TAG, TRIAL_ID_TAG
from study.track.tracking import client as mlflow_client

REGISTERED_FROM_RUN_TAG = "kd_study.source_run_id"
LOGGED_MODEL_NAME = "sentence-transformer"   # not "student": a run artifact of that name would resolve to the model


def register_student(folder: str | Path, tracking_uri: str, model_name: str, *, experiment_id: str, run_id: str,
                     study_name: str, trial_id: str, metrics: Mapping[str, float], description: str):
    """Log the sentence-transformers folder `folder` and register it as a new version of `model_name`; return it.

    `run_id` is the trial's run (the version's source run), `metrics` its final metrics (version
    tags, also on the logged model), `description` the version's text.
    """
    import mlflow
    import mlflow.sentence_transformers
    from sentence_transformers import SentenceTransformer

    client = mlflow_client(tracking_uri)
    tags = {STUDY_NAME_TAG: study_name, TRIAL_ID_TAG: trial_id, REGISTERED_FROM_RUN_TAG: run_id,
            **{key: f"{value:.6g}" for key, value in metrics.items()}}
    params = client.get_run(run_id).data.params
    logged = client.create_logged_model(experiment_id, name=LOGGED_MODEL_NAME, source_run_id=run_id, tags=tags,
                                        params=dict(params))
    model = SentenceTransformer(str(folder), device="cpu")
    # The flavour's writer and the registry's check of a `models:/` source both use the process-wide URI.
    with _tracking(tracking_uri):
        mlflow.sentence_transformers.log_model(model, name=LOGGED_MODEL_NAME, model_id=logged.model_id,
                                               pip_requirements=_requirements())
        _ensure_registered_model(client, model_name)
        return client.create_model_version(model_name, source=f"models:/{logged.model_id}", run_id=run_id,
                                           tags=tags, description=description, model_id=logged.model_id)


def _requirements() -> list[str]:
    """The flavour's own requirements, pinned to what is installed (without a local label such as +cpu).

    Given, so that MLflow does not infer them by loading the model again in a subprocess.
    """
    from importlib.metadata import version

    return [f"{dist}=={version(dist).split('+')[0]}" for dist in ("sentence-transformers", "transformers", "torch")]


def _ensure_registered_model(client, model_name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description="Students distilled by kd-study.")


@contextlib.contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """MLflow's flavour functions write through the process-wide tracking URI: point it at `uri` meanwhile."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))   # no "Successfully registered" chatter
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        logger.setLevel(level)
