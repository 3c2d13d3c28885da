"""The layers only point down, and no two files import each other (directly or round a loop).

    core  <-  ingest  <-  retrieval  <-  answer  <-  pipeline <-  eval  <-  guides_qa (cli, ui, ...), app.py

A module may import from its own layer or any layer below it, never from a layer above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["core", "ingest", "retrieval", "answer", "practice",
          "pipeline",   # the Pipeline and its llama-index adapter (eval answers with both: ours and the peer)
          "eval", "guides_qa", "app"]


def layer_of(module: str) -> int | None:
    """Index in LAYERS of the most specific prefix that names ``module``'s layer."""
    best = None
    for i, name in enumerate(LAYERS):
        if module == name or module.startswith(name + "."):
            if best is None or len(name) > len(LAYERS[best]):
                best = i
    return best


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports (at top level or inside functions), absolute names."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    files = [p for p in root.rglob("*.py") if layer_of(module_name(p, root)) is not None
             and not {".venv", ".git", "tests", "build"} & set(p.relative_to(root).parts)]
    mods = {module_name(p, root): p for p in files}
    return {m: {t for t in imports_of(p, m) if layer_of(t) is not None} for m, p in mods.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts if layer_of(t) > layer_of(m))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    nodes = set(graph)
    g = {m: {t for t in ts if t in nodes and t != m} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph():
    return import_graph(REPO)


def test_every_stage_is_in_a_layer(graph):
    assert {m.split(".")[0] for m in graph} >= {"core", "ingest", "retrieval", "answer", "practice", "pipeline", "eval", "guides_qa", "app"}


def test_every_package_folder_is_a_layer():
    """A new top-level package must take its place in LAYERS, or its imports go unchecked."""
    folders = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert sorted(f for f in folders if layer_of(f) is None) == []


def test_no_module_imports_from_a_layer_above_it(graph):
    assert upward_imports(graph) == [], "move the shared code down into core/ (or the lower stage)"


def test_no_import_cycles_between_files(graph):
    assert cycles(graph) == []


def test_the_checks_catch_what_they_name(tmp_path):
    """A planted upward import and a planted cycle are found (so the two tests above can fail)."""
    for pkg in ("core", "answer"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "core" / "a.py").write_text("from answer.b import x\n")
    (tmp_path / "answer" / "b.py").write_text("from .c import y\n")
    (tmp_path / "answer" / "c.py").write_text("def f():\n    from answer import b\n")
    g = import_graph(tmp_path)
    assert upward_imports(g) == ["core.a -> answer.b", "core.a -> answer.b.x"]
    assert cycles(g) == [["answer.b", "answer.c"]]
