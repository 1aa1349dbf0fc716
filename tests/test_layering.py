"""The house's layout, read from the modules' own import statements: rooms, no circles, small modules.

`docs/internals.md` opens with the map these rules pin: `trainables/` never imports `study/`; each
room imports only the rooms listed for it in `ROOMS` (study's rooms any of trainables'); losses and
samplers are functions of tensors and scores (no model, data or config import); no import circle
between modules; no module over 400 lines; and no module imports a path that only exists as an
alias for old pickles (`*/moved.py`). Imports under `if TYPE_CHECKING:` never run, so they are no edge.
"""
from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("study", "trainables")
MAX_LINES = 400

# room -> the rooms (besides itself and the packages' shared top-level modules) it may import
ROOMS: dict[str, set[str]] = {
    "trainables.losses": set(),
    "trainables.samplers": set(),
    "trainables.models": set(),
    "trainables.data": {"trainables.models", "trainables.evaluate", "trainables.samplers"},
    "trainables.evaluate": {"trainables.models", "trainables.data", "trainables.train"},
    "trainables.train": {"trainables.losses", "trainables.samplers", "trainables.models", "trainables.data",
                         "trainables.evaluate"},
    "trainables.prepare": {"trainables.data", "trainables.models", "trainables.samplers", "trainables.train",
                           "trainables.evaluate"},
    "study.space": set(),
    "study.track": {"study.space"},
    "study.check": {"study.space"},
    "study.console": {"study.space", "study.check", "study.track"},
    "study.report": {"study.space", "study.track"},
    "study.run": {"study.space", "study.track", "study.report", "study.check", "study.console"},
    "study.cli": {"study.space", "study.track", "study.report", "study.check", "study.console", "study.run"},
}
# modules any room may import: the packages' shared contracts and schema, and pure statistics
SHARED = {"trainables.config", "trainables.config_io", "trainables.config_choices", "trainables.settings",
          "trainables.errors", "trainables.outputs", "trainables.hashing",
          "trainables.registry", "trainables.config_sets", "trainables.preflight", "trainables.progress", "trainables.yaml_files", "trainables.disk", "trainables.moved", "study.moved", "study.paths", "study.compat",
          "study.report.stats"}
# what losses and samplers may import besides their own room and trainables.errors
PURE_ROOMS = {"trainables.losses", "trainables.samplers"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` except those under `if TYPE_CHECKING:` (names for the reader; never imported)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in (child, *_runtime_nodes(child)))
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(name: str, path: Path) -> set[str]:
    """Every kd-study module `name` imports at run time (module level or inside functions), as dotted names."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    return {t for t in targets if t.split(".")[0] in PACKAGES}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _room(module: str) -> str | None:
    parts = module.split(".")
    room = ".".join(parts[:2])
    return room if room in ROOMS else None


def test_every_import_names_a_real_module_not_an_old_path():
    unknown = sorted(f"{m} imports {t}" for m, ts in GRAPH.items() for t in ts
                     if t not in MODULES and t.rsplit(".", 1)[0] not in MODULES)
    assert not unknown, "imports of paths that are not modules (old paths live only in */moved.py):\n" + "\n".join(unknown)


def test_trainables_never_imports_study():
    bad = sorted(f"{m} → {t}" for m, ts in GRAPH.items() if m.startswith("trainables") for t in ts
                 if t.startswith("study"))
    assert not bad, "\n".join(bad)


def test_rooms_import_only_the_rooms_below_them():
    bad = []
    for module, targets in GRAPH.items():
        room = _room(module)
        if room is None:
            continue
        for target in targets:
            owner = _room(target)
            if room.startswith("study") and target.startswith("trainables"):
                continue   # study sits above every trainables room
            target_module = target if target in MODULES else target.rsplit(".", 1)[0]
            if owner == room or target_module in SHARED or target_module in PACKAGES:
                continue
            if room in PURE_ROOMS and target_module == "trainables.errors":
                continue
            if room in PURE_ROOMS or owner not in ROOMS[room]:
                bad.append(f"{module} → {target}")
    assert not bad, "imports across rooms that the map does not allow (docs/internals.md):\n" + "\n".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            w = w if w in graph else w.rsplit(".", 1)[0]
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    cycles = _cycles(GRAPH)
    assert not cycles, "import circles:\n" + "\n".join(" ↔ ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_400_lines():
    long = sorted(f"{p.relative_to(ROOT)}: {n}" for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES)
    assert not long, f"modules over {MAX_LINES} lines (split by job):\n" + "\n".join(long)


@pytest.mark.parametrize("package", PACKAGES)
def test_old_module_paths_still_unpickle(package):
    """A study started before the rooms pickled names like `study.search.StudySearch`: resume unpickles them."""
    import importlib

    moved = importlib.import_module(f"{package}.moved")
    for old, new in {**moved.MODULES, **moved.PACKAGES}.items():
        target = importlib.import_module(new)
        names = [n for n, v in vars(target).items() if not n.startswith("_") and getattr(v, "__module__", None) == new]
        if old in moved.MODULES:
            assert importlib.import_module(old) is target
        if names:
            assert pickle.loads(f"c{old}\n{names[0]}\n.".encode()) is getattr(target, names[0]), (old, names[0])
