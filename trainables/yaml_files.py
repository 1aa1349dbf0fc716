"""The one YAML reader of kd-study's input files: safe, UTF-8, and a key given twice in a mapping is an error.

PyYAML's `safe_load` keeps the last of two equal keys silently, so `loss: {gamma1: 2, gamma1: 5}`
ran γ1 = 5 without a word. `UniqueKeyLoader` raises a `yaml.constructor.ConstructorError` instead:
a `yaml.YAMLError` with the line of the second key, so every reader that already reports malformed
YAML as one line (file and line) reports this too. Every YAML a user writes (spaces, trial
configs, document and findings specs) is read with `safe_load_unique`.

Example:
    >>> safe_load_unique("a: 1\\nb: 2\\n")
    {'a': 1, 'b': 2}
    >>> safe_load_unique("a: 1\\na: 2\\n")
    Traceback (most recent call last):
    ...
    yaml.constructor.ConstructorError: while constructing a mapping
    ...
"""
from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import yaml
from yaml.constructor import ConstructorError


class UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (merge keys `<<` keep their meaning)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:   # an unhashable key: SafeLoader's own error says so below
                break
            if first is not None:
                raise ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"key {key!r} given twice (first on line {first.start_mark.line + 1}); give it once",
                    key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(stream: str | bytes | IO[str]) -> Any:
    """`yaml.safe_load`, but a duplicate key in a mapping raises a ConstructorError (a yaml.YAMLError)."""
    return yaml.load(stream, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


class NotUtf8(ValueError):
    """A text file with bytes that are not UTF-8; the message names the file, the byte, its offset and line."""


def read_utf8(path: str | Path) -> str:
    """The text of `path`, or NotUtf8 naming the first byte that is not UTF-8 (not a traceback from deep inside)."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise NotUtf8(f"{path}: line {line}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
                      f"{error.start}); save the file as UTF-8") from None
