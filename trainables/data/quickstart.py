"""`quickstart` and `quickstart-numpy`: retrieval collections made offline from installed docstrings.

Every install has real, human-written text that pairs a short question-like line with a longer
answer: API documentation. The quickstart turns it into a retrieval task, so a study runs on a fresh
machine with no network and no `../shared` data.

Recipe (`GENERATOR_VERSION` names it; bump it when any rule below changes):

1. Walk a fixed, curated list of modules (`STDLIB_MODULES` for `quickstart`, the Python standard
   library; `NUMPY_MODULES` for `quickstart-numpy`, an out-of-domain evaluation set). All are
   side-effect-free to import; one that fails to import on this install (no sqlite3, not POSIX)
   is left out. APIs: the module itself, its public names (`__all__`, else the public names
   defined there or in its `_<name>` C accelerator) that are classes, functions or ufuncs, and
   each class's public methods defined on it or on a private base (`_Base`) of it (`vars`, so
   docstrings inherited from public bases are not repeated). Process-wide hooks that test runners
   and libraries replace at run time (`sys.excepthook`, ...) are left out. Modules in list order,
   names sorted: a stable order.
2. Take the object's own `__doc__` (`inspect.cleandoc`), drop leading signature lines
   (`name(args) -> ret`, as C functions and ufuncs have). The summary is the first line, or, when
   the summary sentence wraps or runs on, the first sentence of the first paragraph: 3–40 words,
   ending with a full stop, not a "Deprecated"/"Alias"/"See ..." pointer. The body is everything
   after it and must have ≥ `MIN_BODY_WORDS` words (a substantial answer, not a one-liner).
3. Query = the summary with the API's own name removed, case-insensitively, with any dotted prefix,
   call parentheses and enclosing quotes (`heapq.heappush`, `Class.method()`, ``np.add``); a query
   left with fewer than `MIN_QUERY_WORDS` content words (stop words aside) is trivial and dropped.
   Passage = the body: section-heading underlines dropped, whitespace collapsed, capped at
   `MAX_PASSAGE_CHARS` characters at a word boundary.
4. Duplicates are dropped, first one kept: the same object reached twice, a query text already seen
   (case-insensitive) or a passage already seen.
5. Split: queries ordered by sha256(f"{SPLIT_SEED}:{api}"), the first `TEST_FRACTION` are `test`, the
   rest `train` (seeded, exact 80/20, and stable when a docstring elsewhere changes). Each query has
   one relevant passage (grade 1), its own; the corpus is all passages of both splits.
   Query ids and doc ids are the dotted API name (e.g. `heapq.merge`).

Sizes measured with Python 3.11.7 / numpy 2.4.6 on Linux: `quickstart` 1,637 pairs (1,310 train,
327 test), `quickstart-numpy` 847 pairs (678 train, 169 test); a build takes about a second.

The build is deterministic for a given Python and numpy version (and platform: a few `os` docstrings
differ). It is cached as JSONL in `$KD_STUDY_CACHE` (default `~/.cache/kd-study`) under a name keyed
by source, Python version, numpy version and generator version, written atomically (temp file +
rename), so concurrent Ray workers never read a half-written file. The fingerprint of the data is the
sha256 of that file's bytes (plus the split).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
import subprocess
import sys
import platform
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from trainables.data.types import DataError, DictCorpus, RetrievalData

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2
SPLIT_SEED = 20240601
TEST_FRACTION = 0.2
SPLITS = ("train", "test")
MAX_PASSAGE_CHARS = 1500
MIN_BODY_WORDS = 12
MIN_QUERY_WORDS = 3
MAX_SUMMARY_WORDS = 40

STDLIB_MODULES = (
    "abc", "argparse", "ast", "asyncio", "asyncio.base_events", "asyncio.base_subprocess", "asyncio.events",
    "asyncio.futures", "asyncio.locks", "asyncio.protocols", "asyncio.queues", "asyncio.runners",
    "asyncio.selector_events", "asyncio.sslproto", "asyncio.staggered", "asyncio.streams", "asyncio.subprocess",
    "asyncio.tasks", "asyncio.transports", "asyncio.unix_events", "atexit", "base64", "bdb", "binascii",
    "bisect", "builtins", "bz2", "calendar", "cmath", "cmd", "code", "codecs", "codeop", "collections",
    "collections.abc", "colorsys", "compileall", "concurrent.futures", "concurrent.futures.process",
    "concurrent.futures.thread", "configparser", "contextlib", "contextvars", "copy", "copyreg", "cProfile",
    "csv", "ctypes", "dataclasses", "datetime", "dbm", "dbm.dumb", "decimal", "difflib", "dis", "doctest",
    "email.charset", "email.contentmanager", "email.encoders", "email.errors", "email.feedparser",
    "email.generator", "email.header", "email.headerregistry", "email.iterators", "email.message",
    "email.mime.application", "email.mime.audio", "email.mime.base", "email.mime.image", "email.mime.message",
    "email.mime.multipart", "email.mime.nonmultipart", "email.mime.text", "email.parser", "email.policy",
    "email.utils", "enum", "errno", "faulthandler", "fcntl", "filecmp", "fileinput", "fnmatch", "fractions",
    "ftplib", "functools", "gc", "getopt", "gettext", "glob", "graphlib", "grp", "gzip", "hashlib", "heapq",
    "hmac", "html", "html.parser", "http.client", "http.cookiejar", "http.cookies", "http.server", "imaplib",
    "importlib", "importlib.abc", "importlib.machinery", "importlib.metadata", "importlib.resources",
    "importlib.util", "inspect", "io", "ipaddress", "itertools", "json", "json.decoder", "json.encoder",
    "keyword", "linecache", "locale", "logging", "logging.config", "logging.handlers", "lzma", "mailbox",
    "marshal", "math", "mimetypes", "mmap", "modulefinder", "multiprocessing", "multiprocessing.connection",
    "multiprocessing.context", "multiprocessing.heap", "multiprocessing.managers", "multiprocessing.pool",
    "multiprocessing.process", "multiprocessing.queues", "multiprocessing.reduction",
    "multiprocessing.shared_memory", "multiprocessing.sharedctypes", "multiprocessing.spawn",
    "multiprocessing.synchronize", "multiprocessing.util", "netrc", "numbers", "operator", "optparse", "os",
    "pathlib", "pdb", "pickle", "pickletools", "pkgutil", "platform", "plistlib", "poplib", "posix",
    "posixpath", "pprint", "profile", "pstats", "pwd", "py_compile", "pyclbr", "pydoc", "queue", "quopri",
    "random", "re", "reprlib", "resource", "runpy", "sched", "secrets", "select", "selectors", "shelve",
    "shlex", "shutil", "signal", "smtplib", "socket", "socketserver", "sqlite3", "sqlite3.dump", "ssl", "stat",
    "statistics", "string", "stringprep", "struct", "subprocess", "symtable", "sys", "sysconfig", "tabnanny",
    "tarfile", "tempfile", "termios", "textwrap", "threading", "time", "timeit", "token", "tokenize",
    "tomllib", "trace", "traceback", "tracemalloc", "types", "typing", "unicodedata", "unittest",
    "unittest.case", "unittest.loader", "unittest.mock", "unittest.result", "unittest.runner",
    "unittest.suite", "urllib.error", "urllib.parse", "urllib.request", "urllib.response",
    "urllib.robotparser", "uuid", "venv", "warnings", "wave", "weakref", "wsgiref.handlers", "wsgiref.headers",
    "wsgiref.simple_server", "wsgiref.util", "wsgiref.validate", "xml.dom", "xml.dom.expatbuilder",
    "xml.dom.minicompat", "xml.dom.minidom", "xml.dom.pulldom", "xml.etree.ElementPath",
    "xml.etree.ElementTree", "xml.parsers.expat", "xml.sax", "xml.sax.handler", "xml.sax.saxutils",
    "xml.sax.xmlreader", "xmlrpc.client", "xmlrpc.server", "zipapp", "zipfile", "zipimport", "zlib", "zoneinfo",
)
NUMPY_MODULES = (
    "numpy", "numpy.char", "numpy.emath", "numpy.fft", "numpy.lib.stride_tricks", "numpy.linalg",
    "numpy.ma", "numpy.polynomial", "numpy.polynomial.chebyshev", "numpy.polynomial.hermite",
    "numpy.polynomial.laguerre", "numpy.polynomial.legendre", "numpy.polynomial.polynomial",
    "numpy.random", "numpy.rec", "numpy.strings", "numpy.testing",
)
SOURCES = {"quickstart": STDLIB_MODULES, "quickstart-numpy": NUMPY_MODULES}

_SIGNATURE_LINE = re.compile(r"^\s*[\w.]+\(.*\)\s*(->.*)?$")
_UNDERLINE = re.compile(r"^\s*[-=~^*]{3,}\s*$")
# a full stop that ends a sentence: followed by a capital, quote or bracket, or the paragraph's end
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)(?<!\bvs)\.(?=\s+[A-Z`'\"(\[]|$)")
# process-wide hooks that test runners and libraries replace at run time (pytest, rich, IPython):
# what they hold depends on the process, not on the install
_RUNTIME_HOOKS = frozenset({"sys.breakpointhook", "sys.displayhook", "sys.excepthook", "sys.unraisablehook",
                            "threading.excepthook", "warnings.formatwarning", "warnings.showwarning"})
_STOPWORDS = frozenset("a an and as at be by for from in is it its of on or that the this to with".split())
_POINTER_PREFIXES = ("deprecated", "alias", "see ", "same as", "equivalent to", "this function is deprecated")


@dataclass(frozen=True)
class DocPair:
    """One API: its dotted name, the query made from its summary, the passage made from its body."""

    api: str
    query: str
    passage: str


# ---- loading -------------------------------------------------------------------------------------
def load_quickstart(source: str, split: str, cache_dir: str | Path | None = None) -> RetrievalData:
    """The `split` of `quickstart` / `quickstart-numpy`, built on first use and cached (see module doc)."""
    if source not in SOURCES:
        raise DataError(f"unknown quickstart source {source!r}: expected one of {sorted(SOURCES)}")
    if split not in SPLITS:
        raise DataError(f"{source}: unknown split {split!r}: expected one of {list(SPLITS)}")
    path = ensure_cached(source, cache_dir)
    raw = path.read_bytes()
    records = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    corpus = DictCorpus({r["id"]: r["passage"] for r in records}, source=source)
    queries = {r["id"]: r["query"] for r in records if r["split"] == split}
    qrels = {qid: {qid: 1} for qid in queries}
    content = hashlib.sha256(raw).hexdigest()
    fingerprint = hashlib.sha256(f"{source}\0{split}\0{content}".encode()).hexdigest()
    # both splits search every pair's passage: one corpus per source and build
    corpus_fingerprint = hashlib.sha256(f"{source}\0corpus\0{content}".encode()).hexdigest()
    return RetrievalData(name=f"{source.replace('-', '_')}/{split}", corpus=corpus, queries=queries,
                         qrels=qrels, fingerprint=fingerprint, corpus_fingerprint=corpus_fingerprint)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else `$KD_STUDY_CACHE`, else `~/.cache/kd-study`."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("KD_STUDY_CACHE") or Path.home() / ".cache" / "kd-study")


def cache_path(source: str, cache_dir: str | Path | None = None) -> Path:
    """Where the JSONL of `source` lives: keyed by Python, numpy and generator versions."""
    import numpy

    key = f"{source}-py{platform.python_version()}-numpy{numpy.__version__}-g{GENERATOR_VERSION}.jsonl"
    return cache_root(cache_dir) / "quickstart" / key


def ensure_cached(source: str, cache_dir: str | Path | None = None) -> Path:
    """The cached JSONL of `source`, generated (and written atomically) when absent or unreadable.

    Generation runs in a fresh interpreter with a minimal environment: docstrings of live objects
    depend on what the calling process has imported or patched (test-runner plugins, rich, IPython),
    and the collection must not.
    """
    path = cache_path(source, cache_dir)
    if path.is_file() and _readable(path):
        return path
    package_root = str(Path(__file__).resolve().parents[2])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0", "PYTHONPATH": package_root}
    script = "import sys; from trainables.data.quickstart import write_records; write_records(sys.argv[1], sys.argv[2])"
    result = subprocess.run([sys.executable, "-c", script, source, str(path)], env=env,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or not _readable(path):
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"{source}: could not generate the quickstart collection into {path}: {last}")
    return path


def write_records(source: str, path: str | Path) -> None:
    """Generate `source` in this process and write its JSONL to `path` atomically."""
    path = Path(path)
    records = build_records(source)
    log.info("%s: generated %d query/passage pairs from docstrings into %s", source, len(records), path)
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=path.name, suffix=".tmp",
                                     delete=False) as handle:
        try:
            handle.write(text)
        except BaseException:
            handle.close()
            os.unlink(handle.name)
            raise
    os.replace(handle.name, path)


def _readable(path: Path) -> bool:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return bool(lines) and all({"id", "split", "query", "passage"} <= set(json.loads(line)) for line in lines)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
        return False


# ---- generation ----------------------------------------------------------------------------------
def build_records(source: str) -> list[dict[str, str]]:
    """The JSONL records of `source`: {"id", "split", "query", "passage"}, in generation order."""
    pairs = docstring_pairs(SOURCES[source])
    splits = assign_splits([p.api for p in pairs])
    return [{"id": p.api, "split": splits[p.api], "query": p.query, "passage": p.passage} for p in pairs]


def assign_splits(apis: list[str], seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION) -> dict[str, str]:
    """Seeded exact split: the first `test_fraction` of apis ordered by sha256(seed:api) are test."""
    ordered = sorted(apis, key=lambda api: hashlib.sha256(f"{seed}:{api}".encode()).hexdigest())
    n_test = round(len(ordered) * test_fraction)
    return {api: ("test" if i < n_test else "train") for i, api in enumerate(ordered)}


def docstring_pairs(module_names: tuple[str, ...]) -> list[DocPair]:
    """(query, passage) pairs from the documented public API of the modules (steps 1–4 of the recipe)."""
    pairs: list[DocPair] = []
    seen_objects: set[int] = set()
    seen_queries: set[str] = set()
    seen_passages: set[str] = set()
    for api, name, obj in _documented_objects(module_names):
        if id(obj) in seen_objects:
            continue
        seen_objects.add(id(obj))
        pair = make_pair(api, name, obj.__doc__)
        if pair is None:
            continue
        query_key = pair.query.lower()
        if query_key in seen_queries or pair.passage in seen_passages:
            continue
        seen_queries.add(query_key)
        seen_passages.add(pair.passage)
        pairs.append(pair)
    return pairs


def make_pair(api: str, name: str, doc: Any) -> DocPair | None:
    """The pair of one API, or None when its docstring has no summary sentence + substantial body."""
    if not isinstance(doc, str):
        return None
    lines = inspect.cleandoc(doc).splitlines()
    while lines and (not lines[0].strip() or _SIGNATURE_LINE.match(lines[0])):
        lines.pop(0)
    n_first = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    first_paragraph = " ".join(" ".join(lines[:n_first]).split())
    end = _SENTENCE_END.search(first_paragraph)
    if end is None:
        return None
    summary = first_paragraph[:end.end()]
    if not (3 <= len(summary.split()) <= MAX_SUMMARY_WORDS) or summary.lower().startswith(_POINTER_PREFIXES):
        return None
    rest = [first_paragraph[end.end():]] + [line for line in lines[n_first:] if not _UNDERLINE.match(line)]
    body = " ".join(" ".join(rest).split())
    if len(body.split()) < MIN_BODY_WORDS:
        return None
    query = remove_name(summary, name)
    if len([w for w in re.findall(r"[a-z][\w-]+", query.lower()) if w not in _STOPWORDS]) < MIN_QUERY_WORDS:
        return None
    return DocPair(api=api, query=query, passage=_cap(body, MAX_PASSAGE_CHARS))


def remove_name(text: str, name: str) -> str:
    """`text` without `name` (case-insensitive), with any dotted prefix, `()` and enclosing quotes."""
    if name.lower() in text.lower():  # most summaries do not name their API: skip compiling a pattern
        core = rf"\.?(?:\w+\.)*{re.escape(name)}(?:\(\))?"
        quoted = "|".join(rf"{q}{core}{q}" for q in ("``", "`", "'", '"'))
        text = re.sub(rf"{quoted}|(?<!\w){core}(?!\w)", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\s+([,;]|\.$)", r"\1", " ".join(text.split()))
    return text.strip(" ,;:-")


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0]


def _documented_objects(module_names: tuple[str, ...]) -> Iterator[tuple[str, str, Any]]:
    """(dotted api name, own name, object): modules, public classes and functions, class methods."""
    for module_name in module_names:
        module = _import_quietly(module_name)
        if module is None:
            continue
        yield module_name, module_name.rsplit(".", 1)[-1], module
        for name in _public_names(module):
            if f"{module_name}.{name}" in _RUNTIME_HOOKS:
                continue
            obj = getattr(module, name, None)
            if not (inspect.isclass(obj) or inspect.isroutine(obj) or type(obj).__name__ == "ufunc"):
                continue
            yield f"{module_name}.{name}", name, obj
            if inspect.isclass(obj):
                for member_name, member in _own_methods(obj):
                    yield f"{module_name}.{name}.{member_name}", member_name, member


def _own_methods(cls: type) -> Iterator[tuple[str, Any]]:
    """Public methods the class defines, or inherits from a private base (`_Base`) of the same library."""
    bases = [c for c in cls.__mro__ if c is cls or (c.__name__.startswith("_") and c.__module__ != "builtins")]
    for base in bases:
        for member_name, member in sorted(vars(base).items()):
            member = getattr(member, "__func__", member)  # staticmethod / classmethod
            if not member_name.startswith("_") and inspect.isroutine(member):
                yield member_name, member


def _public_names(module: ModuleType) -> list[str]:
    declared = getattr(module, "__all__", None)
    if declared is not None:
        return sorted({n for n in declared if isinstance(n, str) and not n.startswith("_")})
    own = {module.__name__, "_" + module.__name__.rsplit(".", 1)[-1]}
    names = []
    for name, obj in vars(module).items():
        owner = getattr(obj, "__module__", None)
        if not name.startswith("_") and isinstance(owner, str) and (
                owner in own or owner.startswith(module.__name__ + ".")):
            names.append(name)
    return sorted(names)


def _import_quietly(module_name: str) -> ModuleType | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module_name)
    except ImportError as error:  # e.g. a Python built without sqlite3 or ssl
        log.debug("quickstart: module %s not available: %s", module_name, error)
        return None
