"""A saved student as a sentence-transformers folder: what `SentenceTransformer(DIR)` and `AutoModel` load.

The student's own folder (`BiEncoder.save`: a transformers model + tokenizer + kd_student.json) is
copied as is, so `transformers.AutoModel.from_pretrained(DIR)` and `BiEncoder.load(DIR)` still read
it, and the sentence-transformers module files are written beside it, in the classic layout
(`modules.json`, `sentence_bert_config.json`, `1_Pooling/`, `2_Normalize/`,
`config_sentence_transformers.json`) that sentence-transformers 2.x to 6.x load:

    Transformer(max_seq_length = passage_max_length) → Pooling(cls | mean) [→ Normalize iff cosine]

with `similarity_fn_name` "cosine" or "dot" as the student was trained. Outside kd-study, CLS
pooling or dot similarity would otherwise be lost (sentence-transformers defaults to mean pooling).
One max length is all sentence-transformers keeps: queries longer than the student's
`query_max_length` tokens are cut there by kd-study, so set `model.max_seq_length` to it to encode
queries exactly as kd-study does (the folder's README.md says so). Plain files only: writing
needs neither torch nor sentence-transformers.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

MODULES = "modules.json"
TRANSFORMER_CONFIG = "sentence_bert_config.json"
POOLING_DIR = "1_Pooling"
NORMALIZE_DIR = "2_Normalize"
ST_CONFIG = "config_sentence_transformers.json"
MODEL_CARD = "README.md"
# The layout's version: 3.0 introduced `similarity_fn_name`; older loaders ignore it (and compute cosine).
ST_FORMAT_VERSION = "3.0.0"


def write_sentence_transformer(student_dir: str | Path, out_dir: str | Path,
                               card: dict[str, Any] | None = None) -> Path:
    """Write the saved student in `student_dir` as a sentence-transformers folder `out_dir`; return it.

    `card`: lines for the folder's README.md (e.g. study, trial, metrics), as {label: value}.
    An existing `out_dir` is replaced only when it is empty or an earlier export (has modules.json).
    """
    from trainables.models.student import STUDENT_META   # here: the module stays light for the CLI's checks

    student_dir, out_dir = Path(student_dir), Path(out_dir)
    meta_path = student_dir / STUDENT_META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{student_dir}: no {STUDENT_META} (not a saved kd-study student)")
    settings = json.loads(meta_path.read_text())
    hidden = json.loads((student_dir / "config.json").read_text())["hidden_size"]
    check_model_folder(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(student_dir, out_dir)

    cosine = settings["similarity"] == "cosine"
    modules = [_module(0, "", "Transformer"), _module(1, POOLING_DIR, "Pooling")]
    if cosine:
        modules.append(_module(2, NORMALIZE_DIR, "Normalize"))
        (out_dir / NORMALIZE_DIR).mkdir()
    _write_json(out_dir / MODULES, modules)
    _write_json(out_dir / TRANSFORMER_CONFIG, {"max_seq_length": settings["passage_max_length"],
                                               "do_lower_case": False})
    (out_dir / POOLING_DIR).mkdir()
    _write_json(out_dir / POOLING_DIR / "config.json", {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": settings["pooling"] == "cls",
        "pooling_mode_mean_tokens": settings["pooling"] == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })   # the keys every sentence-transformers release reads
    _write_json(out_dir / ST_CONFIG, {
        "__version__": {"sentence_transformers": ST_FORMAT_VERSION},
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": settings["similarity"],
    })
    (out_dir / MODEL_CARD).write_text(_model_card(settings, card or {}))
    return out_dir


def check_model_folder(out_dir: str | Path) -> None:
    """FileExistsError unless `out_dir` is new, empty or an earlier export (which a new export replaces)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MODULES).is_file())):
        raise FileExistsError(f"{out_dir} exists and is not an exported model (no {MODULES}): choose another folder")


def _module(idx: int, path: str, kind: str) -> dict[str, Any]:
    return {"idx": idx, "name": str(idx), "path": path, "type": f"sentence_transformers.models.{kind}"}


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def _model_card(settings: dict[str, Any], card: dict[str, Any]) -> str:
    lines = [
        "---", "library_name: sentence-transformers", "tags:", "- sentence-transformers", "- knowledge-distillation",
        "- kd-study", "---", "", "# kd-study student", "",
        "A dense retriever (bi-encoder) distilled by kd-study.", "",
        "| | |", "| --- | --- |",
        *(f"| {label} | {value} |" for label, value in card.items()),
        f"| pooling | {settings['pooling']} |",
        f"| similarity | {settings['similarity']} |",
        f"| query max length (tokens) | {settings['query_max_length']} |",
        f"| passage max length (tokens) | {settings['passage_max_length']} |",
        "", "```python", "from sentence_transformers import SentenceTransformer", "",
        "model = SentenceTransformer(PATH)",
        f"passages = model.encode(passages)          # max_seq_length = {settings['passage_max_length']}",
        f"model.max_seq_length = {settings['query_max_length']}                # queries are cut here in training",
        "queries = model.encode(queries)",
        "scores = model.similarity(queries, passages)",
        "```", "",
        "The folder is also a plain transformers model (`AutoModel.from_pretrained(PATH)`; pool the token "
        "states and normalise as above) and a kd-study student (`trainables.models.student.BiEncoder.load(PATH)`). "
        "The student has no pooler head (it pools the token states itself): the pooler weights that loaders "
        "report as newly initialised are unused, and `pooler_output` is not the embedding.", "",
    ]
    return "\n".join(lines)
