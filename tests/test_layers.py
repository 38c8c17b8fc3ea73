"""No module imports a higher floor, and no import circle: an ast scan of every sena_cli module.

Every import counts — at module level, inside a function, and a module named in a string for
`importlib.import_module` — since a lazy import runs just the same. The floors are the map in
docs/architecture.md (read here, so the docs and the check cannot drift); a same-floor import is
allowed while it makes no circle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "sena_cli"
_MODULE_STRING = re.compile(rf"^({PACKAGE}(?:\.\w+)+)(?::\w+)?$")

# Edges allowed for now, each with who removes it. The lead deletes an entry when its branch lands;
# test_each_known_exception_still_exists fails once the import is gone, so none outlives its import.
KNOWN: dict[tuple[str, str], str] = {}


def floors(doc: Path = REPO / "docs" / "architecture.md") -> dict[str, int]:
    """Room name -> floor (0 = highest), from the fenced map under docs/architecture.md's '## Floors'."""
    text = doc.read_text().split("## Floors", 1)[1]
    line = re.search(r"```\n(.+?)\n```", text, re.S).group(1)
    return {room.strip(): i for i, rooms in enumerate(line.split("→")) for room in rooms.split(",")}


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(module: str, src: Path) -> bool:
    base = src.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports(src: Path = REPO) -> list[tuple[str, str, str, int]]:
    """(importer, imported, file, line) for every sena_cli import of every module under src/sena_cli."""
    edges = []
    for path in sorted((src / PACKAGE).rglob("*.py")):
        name = _module_name(path, src)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        rel = path.relative_to(src).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        nodes = list(ast.walk(tree))
        for node in nodes:
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                parts = package.split(".")
                base = (".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                        if node.level else node.module or "")
                # `from sena_cli import layout` imports the module sena_cli.layout, not the package
                targets = [f"{base}.{a.name}" if _exists(f"{base}.{a.name}", src) else base for a in node.names]
            edges += [(name, t, rel, node.lineno) for t in dict.fromkeys(targets)
                      if t == PACKAGE or t.startswith(PACKAGE + ".")]
        if any(isinstance(n, ast.Call) and ast.unparse(n.func).endswith("import_module") for n in nodes):
            for node in nodes:
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    match = _MODULE_STRING.match(node.value)
                    if match:
                        edges.append((name, match.group(1), rel, node.lineno))
    return [e for e in edges if e[0] != e[1]]


def room(module: str, rooms: dict[str, int]) -> str | None:
    """The room a module stands in: its own name, else its package's, under sena_cli."""
    if module == PACKAGE:
        return "__init__" if "__init__" in rooms else None
    parts = module.split(".")[1:]
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in rooms:
            return ".".join(parts[:i])
    return None


def _circles(edges: list[tuple[str, str, str, int]]) -> list[list[tuple[str, str, str, int]]]:
    """One circle (as its edges) per strongly connected group of modules (Tarjan)."""
    graph: dict[str, dict[str, tuple]] = {}
    for e in edges:
        graph.setdefault(e[0], {}).setdefault(e[1], e)
    index, low, stack, on, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    circles = []
    for group in groups:  # a shortest way round from the group's first module, by breadth-first search
        start = min(group)
        paths = {start: []}
        todo = [start]
        while todo:
            v = todo.pop(0)
            for w, e in sorted(graph.get(v, {}).items()):
                if w in group and w not in paths:
                    paths[w] = paths[v] + [e]
                    todo.append(w)
        last = min((v for v in paths if start in graph.get(v, {})), key=lambda v: (len(paths[v]), v))
        circles.append(paths[last] + [graph[last][start]])
    return circles


def problems(src: Path = REPO, known=None, doc: Path = REPO / "docs" / "architecture.md") -> list[str]:
    """Every module with no floor, every upward import and every circle, each one line."""
    rooms = floors(doc)
    known = KNOWN if known is None else known
    edges = [e for e in imports(src) if (e[0], e[1]) not in known]
    modules = sorted({_module_name(p, src) for p in (src / PACKAGE).rglob("*.py")})
    found = [f"{m} stands on no floor: add it to the map in docs/architecture.md"
             for m in modules if room(m, rooms) is None]
    for importer, imported, file, line in edges:
        a, b = room(importer, rooms), room(imported, rooms)
        if a is not None and b is not None and rooms[b] < rooms[a]:
            found.append(f"{file}:{line}: {importer} ({a}) imports {imported} ({b}), a higher floor")
    for circle in _circles(edges):
        chain = "; ".join(f"{file}:{line}: {importer} imports {imported}" for importer, imported, file, line in circle)
        found.append(f"import circle: {chain}")
    return found


# ---------------------------------------------------------------- the product


def test_no_module_imports_a_higher_floor_and_none_is_in_a_circle():
    found = problems()
    assert not found, "the layering is broken (docs/architecture.md):\n" + "\n".join(found)


def test_each_known_exception_still_exists():
    edges = {(e[0], e[1]) for e in imports()}
    stale = [f"{a} no longer imports {b}: delete it from KNOWN in tests/test_layers.py" for a, b in KNOWN
             if (a, b) not in edges]
    assert not stale, "\n".join(stale)


def test_the_layering_holds_with_no_exceptions():
    assert problems(known={}) == []


# ---------------------------------------------------------------- the check can fail


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in {"__init__.py": "", **files}.items():
        path = tmp_path / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_an_upward_import_inside_a_function_is_named_with_its_file_and_line(tmp_path):
    src = _package(tmp_path, {"frame.py": "X = 1\n",
                              "artifacts.py": "import json\n\n\ndef read():\n    from sena_cli.frame import X\n"})
    assert problems(src, known={}) == [
        "sena_cli/artifacts.py:5: sena_cli.artifacts (artifacts) imports sena_cli.frame (frame), a higher floor"]


def test_a_module_named_for_import_module_counts(tmp_path):
    src = _package(tmp_path, {"stages/__init__.py": "", "stages/qa.py": "",
                              "config.py": "import importlib\n\nM = importlib.import_module('sena_cli.stages.qa')\n"})
    assert problems(src, known={}) == [
        "sena_cli/config.py:3: sena_cli.config (config) imports sena_cli.stages.qa (stages), a higher floor"]


def test_a_same_floor_circle_is_named_edge_by_edge(tmp_path):
    src = _package(tmp_path, {"config.py": "def f():\n    from sena_cli import frame\n",
                              "frame.py": "from sena_cli.config import f\n"})
    assert problems(src, known={}) == [
        "import circle: sena_cli/config.py:2: sena_cli.config imports sena_cli.frame; "
        "sena_cli/frame.py:1: sena_cli.frame imports sena_cli.config"]


def test_a_same_floor_import_without_a_circle_and_a_downward_one_pass(tmp_path):
    src = _package(tmp_path, {"config.py": "from sena_cli import frame, errors\n", "frame.py": "", "errors.py": "",
                              "vlm/__init__.py": "from sena_cli.vlm.model import VLM\n",
                              "vlm/model.py": "from sena_cli.vlm import chat\nVLM = 1\n", "vlm/chat.py": ""})
    assert problems(src, known={}) == []


def test_a_module_off_the_map_is_named(tmp_path):
    src = _package(tmp_path, {"extra.py": ""})
    assert problems(src, known={}) == ["sena_cli.extra stands on no floor: add it to the map in docs/architecture.md"]
