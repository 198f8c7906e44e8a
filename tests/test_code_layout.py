"""The rules of the code layout (docs/code-layout.md), read from the source as text.

Each folder of ``src/napari_samrefine`` is one concept and imports point down:
a package may import only the packages listed for it in ``ALLOWED``. There are
no import circles between modules, no private name (``_x``) imported from
another module, and no module over ``MAX_LINES`` lines. The paper's algorithm
(``samrefiner/``) imports nothing lazy or file-related.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_samrefine"
PACKAGE = "napari_samrefine"
MAX_LINES = 400

# Which of the package's own parts each part may import (besides itself).
# Parts are sub-packages, or top-level modules without their ".py".
BASE = {"_progress", "io"}
ALLOWED: dict[str, set[str]] = {
    "_progress": set(),
    "io": set(),
    "labels": set(),
    "models": {"_progress", "io", "labels"},
    "engine": {"models", *BASE, "labels"},
    "samrefiner": {"engine", "models", "labels", "_progress"},
    "adaption": {"samrefiner", "engine", "models", "labels", *BASE},
    "quality": {"samrefiner", "engine", "models", "labels", *BASE},
    "pipeline": {"judge", "quality", "samrefiner", "engine", "models", "labels", *BASE},
    "judge": {"samrefiner", "engine", "models", "labels", *BASE},
    "evaluation": {"pipeline", "quality", "samrefiner", "engine", "models", "labels", *BASE},
    "teach": {"evaluation", "pipeline", "samrefiner", "engine", "models", "labels", *BASE},
    "batch": {"pipeline", "quality", "adaption", "samrefiner", "engine", "models", "labels", *BASE},
    "testing": {"models", "engine"},
    "cli": {
        "batch", "teach", "judge", "evaluation", "pipeline", "quality", "adaption", "samrefiner",
        "engine", "models", "labels", "testing", *BASE,
    },
    "_napari": {
        "batch", "teach", "judge", "evaluation", "pipeline", "quality", "adaption", "samrefiner",
        "engine", "models", "labels", "testing", *BASE,
    },
}
# The algorithm's folder: nothing lazy, nothing that reads or writes files.
ALGORITHM_FORBIDDEN = {
    "dask", "zarr", "tifffile", "pooch", "PIL", "os", "pathlib", "shutil", "tempfile",
    f"{PACKAGE}.io", f"{PACKAGE}.engine.disk_cache", f"{PACKAGE}.engine.embedding_file",
    f"{PACKAGE}.pipeline",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _module_name(path).split(".")
                base = base if path.name == "__init__.py" else base[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.append((module, [a.name for a in node.names], node.lineno))
    return out


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else None


def _own_target(module: str, names: list[str]) -> list[str]:
    """The package's modules an import statement reaches (a module, or modules named in it)."""
    if module in MODULES and not MODULES[module].name == "__init__.py":
        return [module]
    subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return subs or ([module] if module in MODULES else [])


def test_imports_point_down():
    wrong = []
    for name, path in MODULES.items():
        part = _part(name)
        if part is None:  # the package's face (__init__) may import anything
            continue
        for module, _names, line in _imports(path):
            other = _part(module)
            if other is None or other == part:
                continue
            if other not in ALLOWED.get(part, set()):
                wrong.append(f"{path.relative_to(SRC)}:{line} ({part}) imports {module} ({other})")
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)


def test_no_private_name_imported_across_modules():
    wrong = []
    for name, path in MODULES.items():
        for module, names, line in _imports(path):
            if not module.startswith(PACKAGE) or module == name:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                wrong.append(f"{path.relative_to(SRC)}:{line} takes {private} from {module}")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    graph = {
        name: {
            t
            for module, names, _ in _imports(path)
            for t in _own_target(module, names)
            if t != name and not t == PACKAGE
        }
        for name, path in MODULES.items()
    }
    # Tarjan's strongly connected components, iteratively small enough to recurse here.
    index, low, on_stack, stack, circles = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small(name):
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(SRC)} has {lines} lines (> {MAX_LINES})"


def test_the_algorithm_imports_nothing_lazy_or_file_related():
    wrong = []
    for name, path in MODULES.items():
        if _part(name) != "samrefiner":
            continue
        for module, _names, line in _imports(path):
            hit = [f for f in ALGORITHM_FORBIDDEN if module == f or module.startswith(f + ".")]
            if hit:
                wrong.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_rules_see_the_code():
    """The checks above read every module and find the package's own imports."""
    assert len(MODULES) > 50
    refine = MODULES[f"{PACKAGE}.pipeline.refiner"]
    assert any(m.startswith(f"{PACKAGE}.samrefiner") for m, _, _ in _imports(refine))
    assert set(ALLOWED) >= {_part(n) for n in MODULES if _part(n)}
