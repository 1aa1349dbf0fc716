"""Cheap checks that run before anything heavy is imported or started, so bad inputs fail in seconds."""
from __future__ import annotations

import re
import socket
from pathlib import Path

from trainables.config import ConfigError, TrialConfig
from trainables.errors import Failure

from study.paths import StudyPaths
from study.track.tracking import cause_line, redact


class StudyError(Failure):
    """A study-level failure that is not a bad input (Ray unreachable, trials crashed); one line."""


class UnreachableError(Failure):
    """A service the study needs (the Ray cluster) does not answer; the message is one line."""


# What --ray-address may be (Ray's forms): `auto`, `local`, HOST:PORT (a cluster's GCS) or ray://HOST[:PORT] (Ray Client).
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])"
RAY_ADDRESS = re.compile(rf"\A(?:auto|local|{_HOST}:(?P<port>\d{{1,5}})|ray://{_HOST}(?::(?P<client_port>\d{{1,5}}))?)\Z")


def check_global_options(num_cpus: int | None, ray_address: str | None) -> None:
    """--num-cpus and --ray-address, checked before anything is read, started or written (exit 2, one line)."""
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus {num_cpus}: expected a positive number of CPUs for the local Ray")
    if ray_address is None:
        return
    match = RAY_ADDRESS.match(ray_address)
    port = match and (match["port"] or match["client_port"])
    if not match or (port and not 0 < int(port) < 65536):
        raise ConfigError(f"--ray-address {ray_address!r}: expected auto, local, HOST:PORT (a cluster's head) or "
                          "ray://HOST:PORT (Ray Client), e.g. ray://head:10001")


def check_ray_address(address: str | None, timeout: float = 5.0) -> None:
    """A `host:port` (or `ray://host:port`) that accepts no connection fails now: ray.init would retry for minutes."""
    if not address:
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return  # "auto", "local" or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise UnreachableError(f"cannot reach the Ray cluster at {address}: {error.strerror or error}") from None


def check_new_study(name: str, root: str | None) -> StudyPaths:
    paths = StudyPaths.of(name, root)
    if paths.exists():
        raise ConfigError(f"study {name!r} already exists in {paths.dir}: continue it with "
                          f"`kd-study resume {name}` or choose another name (--name)")
    return paths


def check_existing_study(name: str, root: str | None) -> StudyPaths:
    paths = StudyPaths.of(name, root)
    if not paths.exists():
        studies = sorted(d.name for d in paths.root.iterdir() if StudyPaths(paths.root, d.name).exists()) \
            if paths.root.is_dir() else []
        raise ConfigError(f"no study named {name!r} in {paths.root}"
                          + (f" (studies there: {', '.join(studies)})" if studies else ""))
    return paths


def check_optuna_storage(url: str, study_name: str) -> None:
    """An --optuna-storage that cannot be opened, or already holds a study of this name, fails now (before the
    tracking store is made: nothing is written for a study that cannot run)."""
    try:   # SQLAlchemy alone first: a URL that does not parse or connect fails in a second, without optuna's import
        import sqlalchemy

        sqlalchemy.create_engine(url).connect().close()
    except Exception as error:  # noqa: BLE001 - the user's URL: a bad input (exit 2), like an unreachable tracking store
        raise ConfigError(f"--optuna-storage {redact(url)} is not usable: {cause_line(str(error))}") from None
    import optuna

    try:
        storage = optuna.storages.RDBStorage(url)
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except Exception as error:  # noqa: BLE001 - the user's URL: a bad input (exit 2), like an unreachable tracking store
        raise ConfigError(f"--optuna-storage {redact(url)} is not usable: {cause_line(str(error))}") from None
    if study_name in names:
        raise ConfigError(f"Optuna storage {redact(url)} already holds a study named {study_name!r}: "
                         "delete it, or give this study another name (--name)")


def check_trial_inputs(cfg: TrialConfig, source: str | Path):
    """The checks of everything a trial touches (trainables.preflight, one faiss), before Ray starts."""
    from trainables.preflight import preflight

    from study.run.versions import check_one_faiss

    check_one_faiss()
    return preflight(cfg, source=str(source))
