"""Reading and naming configs: YAML files that must hold a mapping, dotted keys, one-line validation errors,
and the one rule for names that become folders. Shared by the trial config and the search space.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainables.errors import ConfigError
from trainables.registry import loss_entries, sampler_entries
from trainables.yaml_files import NotUtf8, read_utf8, safe_load_unique


# The one rule for every name that becomes a folder: study, trial and run names (`name`, the CLI's NAME
# arguments, `--name`) and evaluation set labels (metric keys `beir/<label>/ndcg_at_10`, artifact paths).
# One path component: no '/', no leading '.' (so never '..'), nothing a shell quotes; short enough that
# the names derived from it (trial folders, run names) stay far below the 255 bytes a folder name may have.
NAME_MAX_LENGTH = 100
NAME_PATTERN = re.compile(rf"\A[A-Za-z0-9][A-Za-z0-9._-]{{0,{NAME_MAX_LENGTH - 1}}}\Z")   # \Z: `$` lets a newline in
NAME_RULE = (f"expected letters, digits, '.', '_' or '-', starting with a letter or digit (a folder name), "
             f"at most {NAME_MAX_LENGTH} characters")


def check_name(value: Any, what: str | None = None) -> str:
    """`value` if it is a valid study/trial/run name, else a ConfigError naming it as `what` ("study name", "--name").

    Without `what` (inside a pydantic validator, whose error names the key) the message is the rule alone.
    """
    if isinstance(value, str) and NAME_PATTERN.match(value):
        return value
    shown = repr(value) if not isinstance(value, str) or len(value) <= 60 else f"{value[:40]!r}… ({len(value)} characters)"
    raise ConfigError(f"{what} {shown}: {NAME_RULE}" if what else f"{NAME_RULE}, got {shown}")


PICKLE_SUFFIXES = (".pkl", ".pickle", ".pkl.gz", ".pickle.gz")


def is_pickle_path(path: str | Path) -> bool:
    """A teacher-scores file in the pickle layout (by its name: .pkl / .pickle, gzipped or not)."""
    return str(path).lower().endswith(PICKLE_SUFFIXES)


def get_dotted(raw: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted key (`loss.gamma1`) of a nested mapping; KeyError/TypeError when it is not there."""
    node: Any = raw
    for part in dotted.split("."):
        node = node[part]
    return node


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def read_yaml_mapping(path: str | Path, what: str = "a mapping") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file (and line for syntax).

    An empty file (or one holding only comments) is an error too: it is never what was meant.
    `what` names the expected content in the messages ("a trial config", "a search space").
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = safe_load_unique(read_utf8(path))   # a key given twice is an error, not "the last one wins"
    except NotUtf8 as error:
        raise ConfigError(str(error)) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    if raw is None:
        raise ConfigError(f"{path}: empty file (expected {what}: a YAML mapping of fields)")
    if not isinstance(raw, dict):
        kind = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
            type(raw), type(raw).__name__)
        raise ConfigError(f"{path}: expected {what} (a YAML mapping of fields) at the top level, got {kind}")
    return raw


_CHOSEN = {"loss": loss_entries, "sampler": sampler_entries}


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem: `file: key.path: what was expected`."""
    lines = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        # a union's tag (`loss.kl.bogus`: the `kl` model) is not a key the user wrote
        loc = [p for i, p in enumerate(loc) if not (i and loc[i - 1] in _CHOSEN and p in _CHOSEN[loc[i - 1]]())]
        key = ".".join(loc) or "<root>"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{source}: {key}: {message}")
    return "; ".join(lines)
