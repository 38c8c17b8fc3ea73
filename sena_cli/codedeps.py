"""The code each `sena` command can run, and its fingerprint: what DVC reruns a stage on.

A stage's `cmd` is `sena <command>`; the code it runs starts at cli.py's command function and
follows, inside sena_cli, what can run from there: the module-level code of every module
imported, and the functions, classes and methods that live code names (imports inside functions
count when their function can run: stages import lazily; a class's methods when live code calls
them by name; `importlib.import_module` brings in every module its file names in a string,
`pkgutil.iter_modules` every module of its package).
Following names rather than whole modules keeps a light import (eval.py's use of the registry)
from making a command depend on code it never runs.

`sena code` (the `code` stage, whose DVC dep is the whole sena_cli folder) writes
data/code/<command>.json: {file: sha256 of the code of it the command can run}, each part
normalised (comments, layout, docstrings and `help` texts dropped), and every other stage depends
on its command's file instead of on .py files. DVC hashes files byte by byte, so a comment edit
reruns `code` (well under a second), whose files come out the same, and nothing else; a change
to code a command runs changes its file and reruns its stages, and whatever their outputs feed.
Reads source only: imports no other sena_cli module (and no torch).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the folder holding sena_cli/
PACKAGE = "sena_cli"


# ---------------------------------------------------------------- the closure


@functools.cache
def _tree(path: Path) -> ast.Module:
    """The file's syntax tree with what cannot change a result dropped (see _Normalise)."""
    return _Normalise().visit(ast.parse(path.read_text(), filename=str(path)))


@functools.cache
def _walk(node: ast.AST) -> tuple[ast.AST, ...]:
    return tuple(ast.walk(node))


@functools.cache
def _names(node: ast.AST) -> tuple[str, ...]:
    return tuple(n.id for n in _walk(node) if isinstance(n, ast.Name))


@functools.cache
def _attrs(node: ast.AST) -> frozenset[str]:
    return frozenset(n.attr for n in _walk(node) if isinstance(n, ast.Attribute))


def _module_file(module: str, src: Path) -> Path | None:
    base = src.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _does_something(path: Path) -> bool:
    """A package __init__ that only has a docstring or dunder constants cannot change a result."""
    for node in _tree(path).body:
        if isinstance(node, ast.Pass) or isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        dunders = isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.startswith("__")
                                                       for t in node.targets)
        if dunders and isinstance(node.value, ast.Constant):
            continue
        return True
    return False


ALL = "*"  # every top-level name of a module: it was imported as a module object and used freely
_MODULE_STRING = re.compile(rf"^({PACKAGE}(?:\.\w+)*)(?::(\w+))?$")


@dataclass
class _Module:
    name: str
    path: Path
    defs: dict[str, list[ast.stmt]]  # top-level functions, classes and assigned names
    top: list[ast.AST]  # what runs on import: every statement but function and class bodies


@functools.cache
def _index(name: str, src: Path) -> _Module | None:
    path = _module_file(name, src)
    if path is None:
        return None  # a namespace package, or not sena_cli's
    defs: dict[str, list[ast.stmt]] = {}
    top: list[ast.AST] = []
    for stmt in _tree(path).body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defs.setdefault(stmt.name, []).append(stmt)
            top += stmt.decorator_list
        else:
            top.append(stmt)
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
            for t in targets:
                if isinstance(t, ast.Name):
                    defs.setdefault(t.id, []).append(stmt)
    return _Module(name, path, defs, top)


def _live_parts(stmt: ast.stmt, attrs: frozenset[str]) -> list[ast.AST]:
    """The parts of a reached definition that can run.

    A class's methods run when some live code names them (`x.generate(...)`, a property read),
    and dunders always; a subclass's, always: the class it extends (a trl trainer, a collator)
    calls its overrides.
    """
    if not isinstance(stmt, ast.ClassDef):
        return [stmt]
    parts: list[ast.AST] = [*stmt.bases, *stmt.keywords]
    for member in stmt.body:
        method = isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef)
        if not method or stmt.bases or member.name in attrs or (member.name.startswith("__")
                                                                and member.name.endswith("__")):
            parts.append(member)
    return parts


def _live_code(mod: _Module, seeds: frozenset[str], attrs: frozenset[str]) -> list[ast.AST]:
    """What of a module can run, given the names taken from it and the attribute names used anywhere."""
    code = list(mod.top)
    todo = list(mod.defs) if ALL in seeds else list(seeds)
    todo += [n for stmt in mod.top for n in _names(stmt)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in mod.defs:
            continue
        seen.add(name)
        for stmt in mod.defs[name]:
            parts = _live_parts(stmt, attrs)
            code += parts
            todo += [n for part in parts for n in _names(part)]
    return code


@functools.cache
def _uses(path: Path, alias: str) -> frozenset[str]:
    """The attributes a module reads from an imported module object; ALL when it uses it otherwise."""
    tree = _tree(path)
    bases = {id(n.value): n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == alias:
            if id(node) not in bases:
                return frozenset({ALL})
            used.add(bases[id(node)])
    return frozenset(used)


def _imports_in(code: list[ast.AST], mod: _Module, src: Path) -> list[tuple[str, frozenset[str], bool]]:
    """(module, names taken from it, named explicitly) for the sena_cli imports that `code` runs."""
    found = [f for part in code for f in _part_imports(part, mod.name, mod.path, src)]
    # importlib.import_module("sena_cli.x") in code that runs: every module the file names in a string (for
    # bench/record.py, which resolves the benchmark records' "module:function" names: its package's files)
    if any(_imports_by_name(part) for part in code):
        files = [mod.path] + (sorted(mod.path.parent.glob("*.py")) if mod.name.endswith(".record") else [])
        found += [f for path in files for f in _module_strings(path)]
    # pkgutil.iter_modules in code that runs (the benchmark registry's discovery): every module of its
    # package, for its records (their module-level code); a record's runner, named in a string, runs only
    # where its resolution runs (bench/record.py's import_module above).
    if any(_lists_modules(part) for part in code):
        package = mod.name if mod.path.name == "__init__.py" else mod.name.rpartition(".")[0]
        folder = src.joinpath(*package.split("."))
        found += [(f"{package}.{path.stem}", frozenset({"BENCHMARK", "BENCHMARKS"}), True)
                  for path in sorted(folder.glob("*.py")) if path.stem != "__init__"]
    return [(m, names, named) for m, names, named in found if m == PACKAGE or m.startswith(PACKAGE + ".")]


@functools.cache
def _part_imports(part: ast.AST, name: str, path: Path, src: Path) -> tuple[tuple[str, frozenset[str], bool], ...]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in _walk(part):
        if isinstance(node, ast.Import):
            found += [(a.name, frozenset({ALL}), True) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = set()
            for a in node.names:
                if a.name != "*" and _module_file(f"{base}.{a.name}", src):
                    found.append((f"{base}.{a.name}", _uses(path, a.asname or a.name), True))
                else:
                    names.add(ALL if a.name == "*" else a.name)
            found.append((base, frozenset(names), bool(names)))
    return tuple(found)


@functools.cache
def _imports_by_name(part: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and ast.unparse(n.func).endswith("import_module") for n in _walk(part))


@functools.cache
def _lists_modules(part: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and ast.unparse(n.func).endswith("iter_modules") for n in _walk(part))


@functools.cache
def _module_strings(path: Path) -> tuple[tuple[str, frozenset[str], bool], ...]:
    found = []
    for node in _walk(_tree(path)):
        match = isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value)
        if match:
            found.append((match.group(1), frozenset({match.group(2) or ALL}), True))
    return tuple(found)


@functools.cache
def command_code(command: str, src: Path = ROOT) -> dict[str, list[ast.AST]]:
    """The code `sena <command>` can run, by sena_cli file (repo-relative path) -> its live parts."""
    cli = _index(f"{PACKAGE}.cli", src)
    seeds: dict[str, set[str]] = {cli.name: set()}
    for fn in (s for stmts in cli.defs.values() for s in stmts if isinstance(s, ast.FunctionDef)):
        for deco in fn.decorator_list:
            target = ast.unparse(deco.func if isinstance(deco, ast.Call) else deco)
            if target == "app.callback":  # runs before every command
                seeds[cli.name].add(fn.name)
            elif target == "app.command":
                name = deco.args[0].value if isinstance(deco, ast.Call) and deco.args else fn.name.replace("_", "-")
                if name == command:
                    seeds[cli.name].add(fn.name)
    assert len(seeds[cli.name]) > 0, f"cli.py has no command '{command}'"
    explicit, attrs = {cli.name}, frozenset()
    while True:
        size = (sum(map(len, seeds.values())), len(seeds), len(attrs))
        for name in list(seeds):
            mod = _index(name, src)
            if mod is None:
                continue
            code = _live_code(mod, frozenset(seeds[name]), attrs)
            attrs = attrs.union(*map(_attrs, code))
            for target, names, named in _imports_in(code, mod, src):
                parts = target.split(".")
                for i in range(1, len(parts)):  # parent packages run first
                    seeds.setdefault(".".join(parts[:i]), set())
                seeds.setdefault(target, set()).update(names)
                explicit |= {target} if named else set()
        if size == (sum(map(len, seeds.values())), len(seeds), len(attrs)):
            break
    out = {}
    for name, names in seeds.items():
        mod = _index(name, src)
        if mod is not None and (name in explicit or _does_something(mod.path)):
            out[mod.path.relative_to(src).as_posix()] = _live_code(mod, frozenset(names), frozenset(attrs))
    return out


def command_closure(command: str, src: Path = ROOT) -> frozenset[str]:
    """The sena_cli files `sena <command>` runs, as paths relative to src."""
    return frozenset(command_code(command, src))


# ---------------------------------------------------------------- the fingerprint


def commands(src: Path = ROOT) -> list[str]:
    """The names of cli.py's commands, as `sena NAME` takes them."""
    cli = _index(f"{PACKAGE}.cli", src)
    names = []
    for fn in (s for stmts in cli.defs.values() for s in stmts if isinstance(s, ast.FunctionDef)):
        for deco in fn.decorator_list:
            if ast.unparse(deco.func if isinstance(deco, ast.Call) else deco) == "app.command":
                names.append(deco.args[0].value if isinstance(deco, ast.Call) and deco.args
                             else fn.name.replace("_", "-"))
    return sorted(names)


class _Normalise(ast.NodeTransformer):
    """Drop what cannot change a result: docstrings (any bare string statement) and `help` texts
    (`typer.Option(help=...)`, `field(metadata={"help": ...})`). Comments and layout are not in
    the tree at all."""

    def generic_visit(self, node):
        node = super().generic_visit(node)
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if isinstance(body, list) and any(_is_text(s) for s in body):
                kept = [s for s in body if not _is_text(s)]
                setattr(node, name, kept or [ast.Pass()])
        return node

    def visit_keyword(self, node):
        return None if node.arg == "help" else self.generic_visit(node)

    def visit_Dict(self, node):
        node = self.generic_visit(node)
        pairs = [(k, v) for k, v in zip(node.keys, node.values, strict=True)
                 if not (isinstance(k, ast.Constant) and k.value == "help")]
        node.keys, node.values = [k for k, _ in pairs], [v for _, v in pairs]
        return node


def _is_text(stmt) -> bool:
    value = getattr(stmt, "value", None) if isinstance(stmt, ast.Expr) else None
    return isinstance(value, ast.JoinedStr) or isinstance(value, ast.Constant) and isinstance(value.value, str)


@functools.cache
def _text(node: ast.AST) -> str:
    return ast.unparse(node)  # a node of _tree's, already normalised


def _digest(path: Path, live: list[ast.AST]) -> str:
    """The sha256 of a file's live code: its parts in file order, each normalised and unparsed (so
    that a comment, a blank line or a docstring changes nothing, and a moved line does)."""
    ids = {id(n) for n in live}
    parts = []
    for stmt in _tree(path).body:
        if id(stmt) in ids:
            parts.append(_text(stmt))
        elif isinstance(stmt, ast.ClassDef):  # its live members, under its name
            members = [m for m in (*stmt.bases, *stmt.keywords, *stmt.body) if id(m) in ids]
            if members:
                parts.append(f"class {stmt.name}:\n" + "\n".join(_text(m) for m in members))
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            parts += [f"@{_text(d)} {stmt.name}" for d in stmt.decorator_list]  # they run on import
    return hashlib.sha256("\n\n".join(parts).encode()).hexdigest()


def fingerprint(command: str, src: Path = ROOT) -> dict[str, str]:
    """{file: sha256 of the code of it `sena <command>` can run}, for every file it can run."""
    return {path: _digest(src / path, live) for path, live in sorted(command_code(command, src).items())}


def fingerprints(src: Path = ROOT) -> dict[str, dict[str, str]]:
    """Every command's fingerprint, read afresh from the files under src."""
    for cached in (_tree, _walk, _names, _attrs, _index, _uses, _part_imports, _imports_by_name, _module_strings,
                   command_code, _text):
        cached.cache_clear()
    return {command: fingerprint(command, src) for command in commands(src)}


def fingerprint_text(prints: dict[str, str]) -> str:
    return json.dumps(prints, indent=2, sort_keys=True) + "\n"
