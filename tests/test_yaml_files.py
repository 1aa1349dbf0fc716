"""trainables/yaml_files.py: a key given twice is an error in every YAML a user writes; bytes that are not UTF-8 too."""
from __future__ import annotations

import pytest
import yaml

from trainables.yaml_files import NotUtf8, read_utf8, safe_load_unique


@pytest.mark.parametrize("text,key,line", [
    ("a: 1\na: 2\n", "a", 2),
    ("loss:\n  gamma1: 2\n  gamma1: 5\n", "gamma1", 3),
    ("x: {k: 1, k: 2}\n", "k", 1),
    ("- {a: 1}\n- {b: 1, b: 2}\n", "b", 2),
    ("1: a\n1: b\n", 1, 2),
])
def test_a_key_given_twice_is_an_error_with_its_line(text, key, line):
    with pytest.raises(yaml.YAMLError, match=f"key {key!r} given twice") as raised:
        safe_load_unique(text)
    assert raised.value.problem_mark.line + 1 == line


def test_what_safe_load_reads_reads_the_same():
    text = "a: 1\nb: [1, 2.5, .inf]\nc: {d: null, e: yes}\nbase: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n"
    assert safe_load_unique(text) == yaml.safe_load(text)


def test_it_stays_a_safe_loader():
    with pytest.raises(yaml.YAMLError):
        safe_load_unique("!!python/object/apply:os.system ['true']\n")


def test_bytes_that_are_not_utf8_name_the_file_line_and_byte(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_bytes(b"study:\n  name: caf\xe9\n")
    with pytest.raises(NotUtf8, match=r"space\.yaml: line 2: not UTF-8 text \(byte 0xe9 at offset 18\)"):
        read_utf8(path)
    path.write_bytes("name: café\n".encode())
    assert read_utf8(path) == "name: café\n"
