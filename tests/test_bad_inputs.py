"""Every bad input is refused before any work (issue 27): exit 2, one line naming the file, key or option, < 3 s,
and nothing written — no study folder, no cache, no `mlruns.db`.

The table runs `study.cli.verbs.main` in-process (what the console script calls; the same code and exit
status) in a fresh working folder with `--root` inside it, and compares the folder's files before
and after. A few rows run again as a user runs them, in a fresh interpreter.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from study.cli.verbs import main

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "search_spaces" / "quickstart.yaml"
DROP = object()   # a key to remove from the base space
LONG = "x" * 300
NOT_A_NAME = r"expected letters, digits, '\.', '_' or '-', starting with a letter or digit \(a folder name\)"

# A small valid space: every row changes one thing in it (or in the files beside it).
SPACE: dict[str, Any] = {
    "base": {"data": {"pool_depth": 10}, "sampler": {"k": 4}, "optim": {"lr": 1.0e-4},
             "eval": {"beir": []}},
    "search": {"loss.name": {"type": "categorical", "choices": ["kl", "wkl"]},
               "loss.gamma1": {"type": "float", "low": 0, "high": 4, "when": {"loss.name": "wkl"}}},
    "study": {"name": "bad-inputs"},
}
TRIAL: dict[str, Any] = {"name": "bad-trial", "data": {"pool_depth": 10}, "sampler": {"k": 4}, "eval": {"beir": []}}


def merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """`base` with `change` merged in, nested mappings key by key; DROP removes a key."""
    out = copy.deepcopy(base)
    for key, value in change.items():
        if value is DROP:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and value:
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def space(**change: Any) -> str:
    return yaml.safe_dump(merged(SPACE, change), sort_keys=False)


def base(**change: Any) -> str:
    """A space whose base config has `change`."""
    return space(base=merged(SPACE["base"], change))


def trial(**change: Any) -> str:
    return yaml.safe_dump(merged(TRIAL, change), sort_keys=False)


# ---- data folders in the BEIR layout, each broken in one way --------------------------------------------
DOCS = [{"_id": f"d{i}", "title": "", "text": f"passage number {i} about topic {i % 3}"} for i in range(12)]
QUERIES = [{"_id": f"q{i}", "text": f"topic {i % 3} query {i}"} for i in range(4)]
QRELS = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(4))


def beir_folder(corpus: bytes | None = None, queries: bytes | None = None, qrels: bytes | None = None,
                split: str = "test") -> dict[str, bytes]:
    files = {"corpus.jsonl": corpus if corpus is not None else "".join(json.dumps(d) + "\n" for d in DOCS).encode(),
             "queries.jsonl": queries if queries is not None else "".join(json.dumps(q) + "\n" for q in QUERIES).encode(),
             f"qrels/{split}.tsv": qrels if qrels is not None else QRELS.encode()}
    return {f"data/{name}": content for name, content in files.items()}


def on_data(**folder: Any) -> dict[str, Any]:
    """A space training and evaluating on ./data, broken as `folder` says."""
    return {"space.yaml": base(data={"train": {"id": "beir:data", "split": "test"}, "pool_depth": 10},
                               eval={"dev": {"id": "beir:data", "split": "test"}, "beir": []}),
            **beir_folder(**folder)}


GOOD_CORPUS = "".join(json.dumps(d) + "\n" for d in DOCS).encode()
RUN = ["run", "space.yaml", "--dry-run"]
TRAIN = ["train", "trial.yaml"]

# (id, files in the working folder, command line, regex the error line must match)
Row = tuple[str, dict[str, Any], list[str], str]
ROWS: list[Row] = [
    # -- item 1: names that become folders, metric keys or artifact paths -----------------------------
    ("eval beir name ../../x", {"space.yaml": base(eval={"beir": [{"id": "quickstart-numpy", "name": "../../x"}]})},
     RUN, r"space\.yaml: base: eval\.beir\.0\.name: " + NOT_A_NAME),
    ("eval dev name a/b", {"space.yaml": base(eval={"dev": {"id": "quickstart", "name": "a/b"}})}, RUN,
     r"eval\.dev\.name: " + NOT_A_NAME),
    ("eval dl name with a space", {"space.yaml": base(eval={"dl": [{"id": "quickstart", "name": "my set"}]})}, RUN,
     r"eval\.dl\.0\.name: expected letters"),
    ("train set name ..", {"space.yaml": base(data={"train": {"id": "quickstart", "split": "train", "name": ".."}})},
     RUN, r"data\.train\.name: expected letters"),
    ("derived label not a name", {"space.yaml": base(eval={"dev": {"id": "beir:data(v2)"}}), **beir_folder()}, RUN,
     r"eval\.dev: the label 'data\(v2\)' derived from id .* give the set a `name`"),
    ("study name ../x", {"space.yaml": space(study={"name": "../x"})}, RUN, r"study\.name: " + NOT_A_NAME),
    ("study name a/b", {"space.yaml": space(study={"name": "a/b"})}, RUN, r"study\.name: expected letters"),
    ("study name .hidden", {"space.yaml": space(study={"name": ".hidden"})}, RUN, r"study\.name: expected letters"),
    ("study name empty", {"space.yaml": space(study={"name": ""})}, RUN, r"study\.name: expected letters"),
    ("study name 300 chars", {"space.yaml": space(study={"name": LONG})}, RUN,
     r"study\.name: .*at most 100 characters, got 'xxxx.*\(300 characters\)"),
    ("study name a number", {"space.yaml": space(study={"name": 5})}, RUN, r"study\.name: "),
    ("trial name ../x", {"space.yaml": base(name="../x")}, RUN, r"base: name: expected letters"),
    ("trial name 300 chars", {"space.yaml": base(name=LONG)}, RUN, r"base: name: .*at most 100 characters"),
    ("run --name 300 chars", {"space.yaml": space()}, [*RUN, "--name", LONG], r"--name 'xxxx.*\(300 characters\)"),
    ("run --name ../x", {"space.yaml": space()}, [*RUN, "--name", "../x"], r"--name '\.\./x': expected letters"),
    ("run --name with newline", {"space.yaml": space()}, [*RUN, "--name", "a\nb"], r"--name 'a\\nb'"),
    ("train --name 300 chars", {"trial.yaml": trial()}, [*TRAIN, "--name", LONG], r"--name 'xxxx"),
    ("train config name ../x", {"trial.yaml": trial(name="../x")}, TRAIN, r"trial\.yaml: name: expected letters"),
    ("train eval name ../../x", {"trial.yaml": trial(eval={"beir": [{"id": "quickstart-numpy", "name": "../../x"}]})},
     TRAIN, r"trial\.yaml: eval\.beir\.0\.name: expected letters"),
    ("resume 300 chars", {}, ["resume", LONG], r"study name 'xxxx"),
    ("report 300 chars", {}, ["report", LONG], r"study name 'xxxx"),
    ("export 300 chars", {}, ["export", LONG], r"study name 'xxxx"),
    ("confirm ../x", {}, ["confirm", "../x"], r"study name '\.\./x'"),
    # -- item 4: bytes that are not UTF-8, values that are not YAML ------------------------------------
    ("space not UTF-8", {"space.yaml": b"study:\n  name: caf\xe9\n"}, RUN,
     r"space\.yaml: line 2: not UTF-8 text \(byte 0xe9"),
    ("trial config not UTF-8", {"trial.yaml": b"name: \xff\xfe\n"}, TRAIN, r"trial\.yaml: line 1: not UTF-8 text"),
    ("base config file not UTF-8", {"space.yaml": space(base="trial.yaml"), "trial.yaml": b"seed: 1 # \x80\n"}, RUN,
     r"trial\.yaml: line 1: not UTF-8 text \(byte 0x80"),
    ("corpus.jsonl not UTF-8", on_data(corpus=GOOD_CORPUS + b'{"_id": "d99", "text": "caf\xe9"}\n'), RUN,
     r"data\.train: .*data/corpus\.jsonl:13: not UTF-8 text \(byte 0xe9"),
    ("queries.jsonl not UTF-8", on_data(queries=b'{"_id": "q0", "text": "\xc3\x28"}\n'), RUN,
     r"data/queries\.jsonl:1: not UTF-8 text"),
    ("qrels not UTF-8", on_data(qrels=b"q0\td0\t1\nq1\td\xff\t1\n"), RUN, r"data/qrels/test\.tsv:2: not UTF-8 text"),
    ("--set value not YAML", {"space.yaml": space()}, [*RUN, "--set", "optim.lr=[1"],
     r"--set 'optim\.lr=\[1': the value is not valid YAML"),
    ("--set unclosed mapping", {"space.yaml": space()}, [*RUN, "--set", "loss={name: kl"],
     r"--set 'loss=\{name: kl': the value is not valid YAML"),
    ("--set unclosed quote", {"space.yaml": space()}, [*RUN, "--set", "loss.name='kl"], r"--set \"loss\.name='kl\""),
    ("--set without =", {"space.yaml": space()}, [*RUN, "--set", "optim.lr"], r"--set 'optim\.lr': expected FIELD=VALUE"),
    ("--set without field", {"space.yaml": space()}, [*RUN, "--set", "=1"], r"--set '=1': expected FIELD=VALUE"),
    ("--set given twice", {"space.yaml": space()}, [*RUN, "--set", "optim.lr=1e-4", "--set", "optim.lr=2e-4"],
     r"--set optim\.lr: given twice"),
    ("--set duplicate key in value", {"space.yaml": space()}, [*RUN, "--set", "loss={name: kl, name: wkl}"],
     r"--set 'loss=.*key 'name' given twice"),
    ("check --set not YAML", {"space.yaml": space()}, ["check", "space.yaml", "--set", "optim.lr=[1"],
     r"--set 'optim\.lr=\[1'"),
    # -- item 5: non-finite numbers, absurd α, duplicate keys ---------------------------------------------
    ("lr .inf", {"space.yaml": base(optim={"lr": float("inf")})}, RUN, r"base: optim\.lr: Input should be a finite number"),
    ("lr .nan", {"space.yaml": base(optim={"lr": float("nan")})}, RUN, r"base: optim\.lr: Input should be a finite number"),
    ("weight_decay .inf", {"space.yaml": base(optim={"weight_decay": float("inf")})}, RUN,
     r"optim\.weight_decay: Input should be a finite number"),
    ("max_grad_norm .inf", {"space.yaml": base(optim={"max_grad_norm": float("inf")})}, RUN,
     r"optim\.max_grad_norm: Input should be a finite number"),
    ("gamma1 .inf", {"space.yaml": base(loss={"gamma1": float("inf")})}, RUN, r"loss\.gamma1: Input should be a finite"),
    ("gamma2_floor -.inf", {"space.yaml": base(loss={"gamma2_floor": float("-inf")})}, RUN,
     r"loss\.gamma2_floor: Input should be a finite"),
    ("teacher temperature .nan", {"space.yaml": base(loss={"teacher_temperature": float("nan")})}, RUN,
     r"loss\.teacher_temperature: Input should be a finite"),
    ("student_scale .inf", {"space.yaml": base(loss={"name": "margin_mse", "student_scale": float("inf")})}, RUN,
     r"loss\.student_scale"),
    ("in_batch_weight .inf", {"space.yaml": base(loss={"in_batch_weight": float("inf")})}, RUN,
     r"loss\.in_batch_weight: Input should be a finite"),
    ("cpus_per_worker .inf", {"space.yaml": base(resources={"cpus_per_worker": float("inf")})}, RUN,
     r"resources\.cpus_per_worker: Input should be a finite"),
    ("warmup lr .inf", {"space.yaml": base(init={"warmup": {"lr": float("inf")}})}, RUN,
     r"init\.warmup\.lr: Input should be a finite"),
    ("at_fractions .nan", {"space.yaml": base(eval={"at_fractions": [float("nan")]})}, RUN, r"eval\.at_fractions"),
    ("fixed lr .inf", {"space.yaml": space(fixed={"optim.lr": float("inf")})}, RUN, r"fixed\.optim\.lr"),
    ("search high .inf", {"space.yaml": space(search={"loss.gamma1": {"type": "float", "low": 0, "high": float("inf")}})},
     RUN, r"search\.loss\.gamma1\.high: Input should be a finite"),
    ("search choice .nan", {"space.yaml": space(search={"optim.lr": {"type": "categorical", "choices": [1e-4, float("nan")]}})},
     RUN, r"search\.optim\.lr"),
    ("asha reduction_factor .inf", {"space.yaml": space(study={"asha": {"reduction_factor": float("inf")}})}, RUN,
     r"study\.asha\.reduction_factor: Input should be a finite"),
    ("--set lr .inf", {"space.yaml": space()}, [*RUN, "--set", "optim.lr=.inf"], r"optim\.lr"),
    ("train lr .inf", {"trial.yaml": trial(optim={"lr": float("inf")})}, TRAIN,
     r"trial\.yaml: optim\.lr: Input should be a finite number"),
    ("alpha 1e12", {"space.yaml": base(loss={"alpha": 1e12})}, RUN,
     r"loss\.alpha: Input should be less than or equal to 100"),
    ("gamma1 1e12", {"space.yaml": base(loss={"gamma1": 1e12})}, RUN, r"loss\.gamma1: Input should be less than or equal"),
    ("search alpha up to 1e6", {"space.yaml": space(search={"loss.alpha": {"type": "float", "low": 0, "high": 1e6}})},
     RUN, r"search\.loss\.alpha: 1000000\.0 is invalid"),
    ("--set alpha 1e12", {"space.yaml": space()}, [*RUN, "--set", "loss.alpha=1e12"], r"loss\.alpha"),
    ("duplicate top-level key", {"space.yaml": space() + "study: {name: other}\n"}, RUN,
     r"space\.yaml: line \d+: malformed YAML: key 'study' given twice \(first on line \d+\)"),
    ("duplicate nested key", {"space.yaml": "base:\n  loss: {gamma1: 2, gamma1: 5}\nstudy: {name: s}\n"}, RUN,
     r"space\.yaml: line 2: malformed YAML: key 'gamma1' given twice"),
    ("duplicate search parameter", {"space.yaml": "search:\n  loss.name: {type: categorical, choices: [kl]}\n"
                                                  "  loss.name: {type: categorical, choices: [wkl]}\nstudy: {name: s}\n"},
     RUN, r"line 3: malformed YAML: key 'loss\.name' given twice \(first on line 2\)"),
    ("duplicate key in a list item", {"space.yaml": "study:\n  name: s\n  points_to_evaluate:\n"
                                                    "    - {loss.name: kl, loss.name: wkl}\n"}, RUN,
     r"line 4: malformed YAML: key 'loss\.name' given twice"),
    ("duplicate key in trial config", {"trial.yaml": "name: a\nseed: 1\nseed: 2\n"}, TRAIN,
     r"trial\.yaml: line 3: malformed YAML: key 'seed' given twice"),
    ("duplicate key in base file", {"space.yaml": space(base="trial.yaml"), "trial.yaml": "optim:\n  lr: 1\n  lr: 2\n"},
     RUN, r"trial\.yaml: line 3: malformed YAML: key 'lr' given twice"),
    # -- item 6: options checked before Ray and before any store --------------------------------------
    ("--num-cpus 0", {"space.yaml": space()}, ["--num-cpus", "0", "run", "space.yaml"], r"--num-cpus 0: expected a positive"),
    ("--num-cpus -1", {"space.yaml": space()}, ["--num-cpus", "-1", "run", "space.yaml"], r"--num-cpus -1: expected"),
    ("train --num-cpus 0", {"trial.yaml": trial()}, ["--num-cpus", "0", *TRAIN], r"--num-cpus 0"),
    ("--ray-address http://", {"space.yaml": space()}, ["--ray-address", "http://head:6379", "run", "space.yaml"],
     r"--ray-address 'http://head:6379': expected auto, local, HOST:PORT"),
    ("--ray-address port not a number", {"space.yaml": space()}, ["--ray-address", "head:abc", "run", "space.yaml"],
     r"--ray-address 'head:abc'"),
    ("--ray-address port too large", {"space.yaml": space()}, ["--ray-address", "head:99999", "run", "space.yaml"],
     r"--ray-address 'head:99999'"),
    ("--ray-address ray:// alone", {"space.yaml": space()}, ["--ray-address", "ray://", "run", "space.yaml"],
     r"--ray-address 'ray://'"),
    ("--ray-address with a path", {"space.yaml": space()}, ["--ray-address", "ray://head:10001/x", "run", "space.yaml"],
     r"--ray-address 'ray://head:10001/x'"),
    ("--ray-address two colons", {"space.yaml": space()}, ["--ray-address", "head:1:2", "run", "space.yaml"],
     r"--ray-address 'head:1:2'"),
    ("--ray-address empty host", {"space.yaml": space()}, ["--ray-address", ":6379", "run", "space.yaml"],
     r"--ray-address ':6379'"),
    ("--ray-address on resume", {}, ["--ray-address", "not an address", "resume", "s"], r"--ray-address 'not an address'"),
    ("--optuna-storage not a URL", {"space.yaml": space()}, ["run", "space.yaml", "--optuna-storage", "notaurl"],
     r"--optuna-storage notaurl is not usable"),
    ("--optuna-storage unknown dialect", {"space.yaml": space()},
     ["run", "space.yaml", "--optuna-storage", "nosuchdb://u:secret@host/db"],
     r"--optuna-storage nosuchdb://u:\*\*\*@host/db is not usable"),
    ("--optuna-storage sqlite in no folder", {"space.yaml": space()},
     ["run", "space.yaml", "--optuna-storage", "sqlite:////nonexistent-folder/o.db"], r"--optuna-storage sqlite:"),
    ("num_workers above --num-cpus", {"space.yaml": base(resources={"num_workers": 4})},
     ["--num-cpus", "2", "run", "space.yaml"],
     r"space\.yaml: a trial needs 4 CPUs \(resources\.num_workers × cpus_per_worker\) but --num-cpus 2"),
    ("searched num_workers above --num-cpus", {"space.yaml": space(search={"resources.num_workers": {
        "type": "categorical", "choices": [1, 3]}})}, ["--num-cpus", "2", "run", "space.yaml"], r"a trial needs 3 CPUs"),
    ("train num_workers above --num-cpus", {"trial.yaml": trial(resources={"num_workers": 3})},
     ["--num-cpus", "2", *TRAIN], r"trial\.yaml: a trial needs 3 CPUs"),
    ("--num-samples 0", {"space.yaml": space()}, [*RUN, "--num-samples", "0"], r"study\.num_samples"),
    ("--max-concurrent-trials 0", {"space.yaml": space()}, [*RUN, "--max-concurrent-trials", "0"],
     r"study\.max_concurrent_trials"),
    ("confirm --top 0", {}, ["confirm", "s", "--top", "0"], r"--top 0: expected a positive number"),
    ("--set unknown field", {"space.yaml": space()}, [*RUN, "--set", "optim.lrr=1"], r"optim\.lrr"),
    # -- the space file -------------------------------------------------------------------------------------
    ("space missing", {}, RUN, r"space\.yaml: no such file"),
    ("space empty", {"space.yaml": ""}, RUN, r"space\.yaml: empty file"),
    ("space a list", {"space.yaml": "- a\n"}, RUN, r"space\.yaml: expected a search space .* got a list"),
    ("space a string", {"space.yaml": "hello\n"}, RUN, r"got a string"),
    ("space malformed", {"space.yaml": "study: {name: s\n"}, RUN, r"space\.yaml: line \d+: malformed YAML"),
    ("space a folder", {"space.yaml/x": ""}, RUN, r"space\.yaml: no such file"),
    ("no study section", {"space.yaml": space(study=DROP)}, RUN, r"space\.yaml: study: missing"),
    ("no study name", {"space.yaml": space(study={"name": DROP})}, RUN, r"study\.name: missing"),
    ("unknown top-level key", {"space.yaml": space(serach={})}, RUN, r"serach: unknown key"),
    ("unknown study key", {"space.yaml": space(study={"num_sample": 3})}, RUN, r"study\.num_sample: unknown key"),
    ("unknown algorithm", {"space.yaml": space(study={"algorithm": "bayes"})}, RUN, r"study\.algorithm"),
    ("mode given an algorithm", {"space.yaml": space(study={"mode": "tpe"})}, RUN, r"study\.mode: expected 'max' or 'min'"),
    ("num_samples 0", {"space.yaml": space(study={"num_samples": 0})}, RUN, r"study\.num_samples"),
    ("max_concurrent_trials 0", {"space.yaml": space(study={"max_concurrent_trials": 0})}, RUN,
     r"study\.max_concurrent_trials"),
    ("metric not reported", {"space.yaml": space(study={"metric": "nope"})}, RUN, r"study\.metric: 'nope' is not reported"),
    ("one objective", {"space.yaml": space(study={"objectives": [{"metric": "dev_mrr_at_10"}]})}, RUN, r"study\.objectives"),
    ("metric and objectives", {"space.yaml": space(study={"metric": "dev_mrr_at_10", "objectives": [
        {"metric": "dev_mrr_at_10"}, {"metric": "final_loss", "mode": "min"}]})}, RUN, r"give either `metric`"),
    ("grid without grid algorithm", {"space.yaml": space(study={"grid": {"sampler.k": [2, 4]}})}, RUN,
     r"`grid` needs algorithm: grid"),
    ("asha without every_steps", {"space.yaml": space(study={"scheduler": "asha"})}, RUN,
     r"study\.scheduler: asha stops trials on intermediate evaluations"),
    ("replicates 0", {"space.yaml": space(study={"replicates": 0})}, RUN, r"study\.replicates"),
    ("replicates with asha", {"space.yaml": space(study={"replicates": 2, "scheduler": "asha"})}, RUN,
     r"scheduler asha stops seeds one by one"),
    ("seed not a number", {"space.yaml": space(study={"seed": "abc"})}, RUN, r"study\.seed"),
    ("grid mode with points", {"space.yaml": space(study={"algorithm": "grid", "points_to_evaluate": [
        {"loss.name": "kl"}]}, search={"loss.gamma1": DROP})}, RUN, r"points_to_evaluate: grid mode"),
    ("grid num_samples mismatch", {"space.yaml": space(study={"algorithm": "grid", "num_samples": 5},
                                                       search={"loss.gamma1": DROP})}, RUN, r"grid mode runs each of the 2"),
    ("grid empty values", {"space.yaml": space(study={"algorithm": "grid", "grid": {"sampler.k": []}})}, RUN,
     r"study\.grid\.sampler\.k: expected a non-empty list"),
    ("grid also searched", {"space.yaml": space(study={"algorithm": "grid", "grid": {"loss.name": ["kl"]}})}, RUN,
     r"study\.grid\.loss\.name: also in `search`"),
    ("unknown parameter type", {"space.yaml": space(search={"loss.gamma1": {"type": "uniform", "low": 0, "high": 1}})},
     RUN, r"search\.loss\.gamma1"),
    ("low above high", {"space.yaml": space(search={"loss.gamma1": {"type": "float", "low": 4, "high": 1}})}, RUN,
     r"low=4\.0 is above high=1\.0"),
    ("float without high", {"space.yaml": space(search={"loss.gamma1": {"high": DROP}})}, RUN,
     r"float needs both `low` and `high`"),
    ("loguniform from 0", {"space.yaml": space(search={"optim.lr": {"type": "loguniform", "low": 0, "high": 1e-3}})},
     RUN, r"loguniform needs low > 0"),
    ("loguniform with step", {"space.yaml": space(search={"optim.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3,
                                                                       "step": 1e-5}})}, RUN, r"loguniform takes no `step`"),
    ("categorical without choices", {"space.yaml": space(search={"sampler.k": {"type": "categorical", "choices": []}})},
     RUN, r"categorical needs a non-empty `choices`"),
    ("categorical repeated choice", {"space.yaml": space(search={"sampler.k": {"type": "categorical", "choices": [2, 2]}})},
     RUN, r"choices repeat a value"),
    ("categorical with a range", {"space.yaml": space(search={"sampler.k": {"type": "categorical", "choices": [2],
                                                                            "low": 1}})}, RUN, r"categorical takes `choices`"),
    ("int with a fractional step", {"space.yaml": space(search={"sampler.k": {"type": "int", "low": 1, "high": 4,
                                                                              "step": 0.5}})}, RUN, r"int needs a whole `step`"),
    ("unknown searched field", {"space.yaml": space(search={"loss.gama1": {"type": "float", "low": 0, "high": 1}})}, RUN,
     r"loss\.gama1"),
    ("searched range end invalid", {"space.yaml": space(search={"loss.gamma1": {"type": "float", "low": -2, "high": 4}})},
     RUN, r"search\.loss\.gamma1: -2\.0 is invalid"),
    ("searched K above the pool", {"space.yaml": space(search={"sampler.k": {"type": "categorical", "choices": [4, 16]}})},
     RUN, r"search\.sampler\.k: 16 is invalid: sampler\.k=16 is larger than data\.pool_depth=10"),
    ("condition on an unknown field", {"space.yaml": space(search={"loss.gamma1": {"type": "float", "low": 0, "high": 4,
                                                                                  "when": {"loss.nam": "wkl"}}})}, RUN,
     r"loss\.nam"),
    ("point names an unsearched field", {"space.yaml": space(study={"points_to_evaluate": [{"sampler.k": 4}]})}, RUN,
     r"points_to_evaluate\.0\.sampler\.k: not a searched parameter"),
    ("point outside the search", {"space.yaml": space(study={"points_to_evaluate": [{"loss.name": "margin_mse"}]})}, RUN,
     r"points_to_evaluate\.0\.loss\.name: 'margin_mse' is outside its search"),
    ("baseline names an unsearched field", {"space.yaml": space(study={"baseline": {"sampler.k": 4}})}, RUN,
     r"study\.baseline\.sampler\.k: not a searched parameter"),
    ("contrast with empty vs", {"space.yaml": space(study={"contrasts": [{"vs": {}}]})}, RUN, r"study\.contrasts\.0\.vs"),
    ("fixed unknown field", {"space.yaml": space(fixed={"optim.epoch": 1})}, RUN, r"fixed\.optim\.epoch"),
    ("fixed also searched", {"space.yaml": space(fixed={"loss.name": "kl"})}, RUN, r"fixed\.loss\.name: also searched"),
    ("fixed invalid value", {"space.yaml": space(fixed={"optim.lr": -1})}, RUN, r"fixed\.optim\.lr: -1 is invalid"),
    ("base file missing", {"space.yaml": space(base="nowhere.yaml")}, RUN, r"space\.yaml: base: 'nowhere\.yaml' is not a file"),
    ("base file empty", {"space.yaml": space(base="trial.yaml"), "trial.yaml": ""}, RUN, r"trial\.yaml: empty file"),
    # -- the base trial config ------------------------------------------------------------------------------
    ("base unknown key", {"space.yaml": base(optimiser={"lr": 1})}, RUN, r"base: optimiser: unknown key"),
    ("unknown loss", {"space.yaml": base(loss={"name": "focal"})}, RUN, r"base: loss: unknown loss 'focal'"),
    ("unknown sampler", {"space.yaml": base(sampler={"name": "uniform"})}, RUN, r"base: sampler: unknown sampler 'uniform'"),
    ("unknown dataset id", {"space.yaml": base(data={"train": "msmarco"})}, RUN, r"unknown dataset id 'msmarco'"),
    ("negative lr", {"space.yaml": base(optim={"lr": -1})}, RUN, r"base: optim\.lr: Input should be greater than 0"),
    ("warmup_ratio above 1", {"space.yaml": base(optim={"warmup_ratio": 2})}, RUN, r"optim\.warmup_ratio"),
    ("zero temperature", {"space.yaml": base(loss={"student_temperature": 0})}, RUN, r"loss\.student_temperature"),
    ("at_fractions above 1", {"space.yaml": base(eval={"at_fractions": [1.5]})}, RUN, r"eval\.at_fractions: .*\(0, 1\]"),
    ("top_k below 10", {"space.yaml": base(eval={"top_k": 5})}, RUN, r"eval\.top_k"),
    ("pool_source file without a file", {"space.yaml": base(data={"pool_source": "file"})}, RUN,
     r"pool_source 'file' needs data\.candidates_file"),
    ("pickle scores without allow_pickle", {"space.yaml": base(teacher={"scores_file": "s.pkl"})}, RUN,
     r"teacher\.allow_pickle: true"),
    ("num_workers 0", {"space.yaml": base(resources={"num_workers": 0})}, RUN, r"resources\.num_workers"),
    ("unknown precision", {"space.yaml": base(resources={"precision": "fp8"})}, RUN, r"resources\.precision"),
    ("K above pool depth", {"space.yaml": base(sampler={"k": 32})}, RUN, r"sampler\.k=32 is larger than data\.pool_depth"),
    ("candidates file missing", {"space.yaml": base(data={"candidates_file": "run.trec"})}, RUN,
     r"data\.candidates_file: .*run\.trec: no such file"),
    ("cache_dir is a file", {"space.yaml": base(cache_dir="cache"), "cache": "not a folder"}, RUN,
     r"cache_dir: .*cache is not a folder"),
    ("unknown packaged model", {"space.yaml": base(student={"model": "packaged:nope"})}, RUN, r"student\.model"),
    # -- data folders -------------------------------------------------------------------------------------
    ("data folder missing", {"space.yaml": base(eval={"dev": {"id": "beir:nowhere"}})}, RUN,
     r"eval\.dev: beir:.*nowhere: no such folder"),
    ("corpus line not JSON", on_data(corpus=GOOD_CORPUS + b'{"_id": "d99", "text": \n'), RUN,
     r"data\.train: .*data/corpus\.jsonl:13: invalid JSON"),
    ("corpus line without _id", on_data(corpus=GOOD_CORPUS + b'{"text": "no id"}\n'), RUN,
     r"data/corpus\.jsonl:13: expected a JSON object with an '_id'"),
    ("qrels score not an integer", on_data(qrels=b"q0 d0 high\n"), RUN, r"data/qrels/test\.tsv:1: score must be an integer"),
    ("qrels line with 2 fields", on_data(qrels=b"q0 d0\n"), RUN, r"data/qrels/test\.tsv:1: expected 3 fields"),
    ("qrels split missing", on_data(split="dev"), RUN, r"no such file .*qrels/test\.tsv \(splits here: dev\)"),
    ("no positive in qrels", on_data(qrels=b"q0 d0 0\n"), RUN, r"no query has a positive"),
    ("queries.jsonl missing", {**on_data(), "data/queries.jsonl": DROP}, RUN, r"no such file .*queries\.jsonl"),
    # -- trial configs (kd-study train) ---------------------------------------------------------------------
    ("trial config missing", {}, TRAIN, r"trial\.yaml: no such file"),
    ("trial config empty mapping", {"trial.yaml": "{}\n"}, TRAIN, r"trial\.yaml: empty trial config"),
    ("trial config a list", {"trial.yaml": "- 1\n"}, TRAIN, r"trial\.yaml: expected a trial config"),
    ("trial unknown key", {"trial.yaml": trial(lossname="kl")}, TRAIN, r"trial\.yaml: lossname: unknown key"),
    ("trial alpha 1e12", {"trial.yaml": trial(loss={"name": "wkl", "alpha": 1e12})}, TRAIN, r"trial\.yaml: loss\.alpha"),
    ("trial dataset folder missing", {"trial.yaml": trial(eval={"dev": {"id": "beir:nowhere"}})}, TRAIN,
     r"trial\.yaml: eval\.dev: .*no such folder"),
]


def write_files(folder: Path, files: dict[str, Any]) -> None:
    for name, content in files.items():
        path = folder / name
        if content is DROP:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def error_line(stderr: str) -> str:
    """The one error line: the last line of stderr, and the only one that says `kd-study: error:`."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("kd-study: error: "), stderr
    assert sum(line.startswith("kd-study: error:") for line in lines) == 1, stderr
    return lines[-1]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty working folder (cwd), so the defaults (`mlruns.db`, `.kd-cache`, `kd-studies/`) would land in it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return cwd


def test_the_table_has_at_least_100_distinct_bad_inputs():
    ids = [row[0] for row in ROWS]
    assert len(ids) == len(set(ids)) >= 100
    assert len({json.dumps([repr(files), argv]) for _, files, argv, _ in ROWS}) == len(ROWS)


@pytest.mark.parametrize("files,argv,message", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_a_bad_input_exits_2_with_one_line_in_seconds_and_writes_nothing(workdir, capsys, files, argv, message):
    import re

    write_files(workdir, files)
    before = tree(workdir.parent)
    started = time.perf_counter()
    code = main(["--root", str(workdir / "studies"), *argv])
    elapsed = time.perf_counter() - started
    line = error_line(capsys.readouterr().err)
    assert code == 2, line
    assert re.search(message, line), line
    assert "secret" not in line
    assert tree(workdir.parent) == before, "files were written"
    assert elapsed < 3.0, f"{elapsed:.1f} s"


# ---- as a user runs them: a fresh interpreter ---------------------------------------------------------------
AS_A_USER = ["space not UTF-8", "--set value not YAML", "run --name 300 chars", "eval beir name ../../x",
             "--num-cpus 0", "--optuna-storage not a URL"]


@pytest.mark.parametrize("label", AS_A_USER)
def test_the_console_script_says_the_same(tmp_path, label):
    _, files, argv, message = next(row for row in ROWS if row[0] == label)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    write_files(cwd, files)
    before = tree(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([sys.executable, "-m", "study.cli", "--root", str(cwd / "studies"), *argv], cwd=cwd,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    import re

    assert re.search(message, error_line(result.stderr))
    assert tree(tmp_path) == before


# ---- the options' rules keep what Ray accepts ------------------------------------------------------------
@pytest.mark.parametrize("address", ["auto", "local", "10.0.0.1:6379", "head-node:6379", "head.cluster.local:6379",
                                     "ray://head:10001", "ray://head", "ray://10.0.0.1:10001", "[::1]:6379"])
def test_every_ray_address_form_ray_takes_passes(address):
    from study.run.preflight import check_global_options

    check_global_options(1, address)


def test_a_trial_larger_than_the_local_ray_is_bad_input_once_ray_runs():
    """Without --num-cpus the local Ray's size is Ray's to say: checked once it runs, before any asset (exit 2)."""
    from types import SimpleNamespace

    from study.run.ray_session import max_concurrent_trials
    from study.space.schema import load_space
    from trainables.config import ConfigError

    space = load_space(QUICKSTART)   # 2 workers × 1 CPU
    local = SimpleNamespace(cluster_resources=lambda: {"CPU": 1.0})   # what ray.cluster_resources() says
    with pytest.raises(ConfigError, match=r"quickstart\.yaml: a trial needs 2 CPUs and 0 GPUs .* has 1 CPUs"):
        max_concurrent_trials(space, local, remote=False, say=print)
    notes = []
    assert max_concurrent_trials(space, local, remote=True, say=notes.append) == 1   # a cluster may scale up
    assert "waiting for the autoscaler" in notes[0]
