"""dvc.yaml's code deps are the code each stage runs: computed here, not kept by care.

A stage's `cmd` is `sena <command>`; the code it runs starts at cli.py's command function and
follows, inside sena_cli, what can run from there: the module-level code of every module
imported, and the functions, classes and methods that live code names (imports inside functions
count when their function can run: stages import lazily; a class's methods when live code calls
them by name; `importlib.import_module` brings in every module its file names in a string,
`pkgutil.iter_modules` every module of its package). Following names rather than whole modules
keeps a light import (eval.py's use of the registry) from making eval depend on code it never
runs. Each file of that closure must be covered by a `deps` entry (a folder covers the files
under it); each sena_cli entry must be something the command runs; each relative dep must exist
or be another stage's output.
"""

from __future__ import annotations

import ast
import functools
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sena_cli.tracked import stage_instances

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "sena_cli"


# ---------------------------------------------------------------- the closure


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _module_file(module: str, src: Path) -> Path | None:
    base = src.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_package(module: str, src: Path) -> bool:
    return src.joinpath(*module.split(".")).is_dir()


def _does_something(path: Path) -> bool:
    """A package __init__ that only has a docstring or dunder constants cannot change a result."""
    for node in _tree(path).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
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
    todo += [n.id for stmt in mod.top for n in ast.walk(stmt) if isinstance(n, ast.Name)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in mod.defs:
            continue
        seen.add(name)
        for stmt in mod.defs[name]:
            parts = _live_parts(stmt, attrs)
            code += parts
            todo += [n.id for part in parts for n in ast.walk(part) if isinstance(n, ast.Name)]
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


def _imports_in(code: list[ast.AST], mod: _Module, src: Path) -> list[tuple[str, set[str], bool]]:
    """(module, names taken from it, named explicitly) for the sena_cli imports that `code` runs."""
    package = mod.name if mod.path.name == "__init__.py" else mod.name.rpartition(".")[0]
    found = []
    nodes = [n for part in code for n in ast.walk(part)]
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(a.name, {ALL}, True) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = set()
            for a in node.names:
                if a.name != "*" and _module_file(f"{base}.{a.name}", src):
                    found.append((f"{base}.{a.name}", set(_uses(mod.path, a.asname or a.name)), True))
                else:
                    names.add(ALL if a.name == "*" else a.name)
            found.append((base, names, bool(names)))
    # importlib.import_module("sena_cli.x") in code that runs: every module the file names in a string (for
    # bench/record.py, which resolves the benchmark records' "module:function" names: its package's files)
    if any(isinstance(n, ast.Call) and ast.unparse(n.func).endswith("import_module") for n in nodes):
        files = [mod.path] + (sorted(mod.path.parent.glob("*.py")) if mod.name.endswith(".record") else [])
        for node in (n for path in files for n in ast.walk(_tree(path))):
            match = isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value)
            if match:
                found.append((match.group(1), {match.group(2) or ALL}, True))
    # pkgutil.iter_modules in code that runs (the benchmark registry's discovery): every module of its
    # package, for its records (their module-level code); a record's runner, named in a string, runs only
    # where its resolution runs (bench/record.py's import_module above).
    if any(isinstance(n, ast.Call) and ast.unparse(n.func).endswith("iter_modules") for n in nodes):
        folder = src.joinpath(*package.split("."))
        found += [(f"{package}.{path.stem}", {"BENCHMARK", "BENCHMARKS"}, True) for path in sorted(folder.glob("*.py"))
                  if path.stem != "__init__"]
    return [(m, names, named) for m, names, named in found if m == PACKAGE or m.startswith(PACKAGE + ".")]


@functools.cache
def command_code(command: str, src: Path = REPO) -> dict[str, list[ast.AST]]:
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
    explicit, attrs = {cli.name}, set()
    while True:
        size = (sum(map(len, seeds.values())), len(seeds), len(attrs))
        for name in list(seeds):
            mod = _index(name, src)
            if mod is None:
                continue
            code = _live_code(mod, frozenset(seeds[name]), frozenset(attrs))
            attrs |= {n.attr for part in code for n in ast.walk(part) if isinstance(n, ast.Attribute)}
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


def command_closure(command: str, src: Path = REPO) -> frozenset[str]:
    """The sena_cli files `sena <command>` runs, as paths relative to src."""
    return frozenset(command_code(command, src))


# ---------------------------------------------------------------- the check


def _command(cmd: str) -> str | None:
    """`sena qa --iter 1` or `accelerate launch ... -m sena_cli qa --iter 1` -> `qa`."""
    words = cmd.split()
    for i, word in enumerate(words[:-1]):
        if word == "sena" or (word == PACKAGE and i and words[i - 1] == "-m"):
            return words[i + 1]
    return None


def _paths(entries) -> list[str]:
    """Paths of a deps/outs/metrics/plots list (an entry may be `path` or `{path: options}`)."""
    out = []
    for entry in entries or []:
        out += [entry] if isinstance(entry, str) else list(entry) if isinstance(entry, dict) else []
    return out


def _covers(dep: str, path: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def problems(root: Path, src: Path = REPO) -> list[str]:
    """What root/dvc.yaml gets wrong about the code under src/sena_cli; empty when nothing.

    A problem every iteration of a foreach stage shares is named once, by the stage (`qa`).
    """
    stages = stage_instances(root)
    produced = [p for s in stages.values() for key in ("outs", "metrics", "plots") for p in _paths(s.get(key))]
    found: dict[tuple[str, str], list[str]] = {}  # (stage, problem) -> instances
    for name, stage in stages.items():
        for problem in _stage_problems(stage, produced, src):
            found.setdefault((name.partition("@")[0], problem), []).append(name)
    lines = []
    for (base, problem), names in found.items():
        every = [n for n in stages if n.partition("@")[0] == base]
        lines += [f"stage '{n}' {problem}" for n in ([base] if names == every else names)]
    return lines


def _stage_problems(stage: dict, produced: list[str], src: Path) -> list[str]:
    deps = _paths(stage.get("deps"))
    command = _command(stage.get("cmd", ""))
    if command is None:
        return [f"has cmd {stage.get('cmd')!r}, which runs no sena command"]
    closure = command_closure(command, src)
    found = [f"runs {path} but its deps do not list it" for path in sorted(closure)
             if not any(_covers(dep, path) for dep in deps)]
    for dep in deps:
        if Path(dep).is_absolute():
            continue  # e.g. a benchmark file outside the repo: the user's to keep
        if not (src / dep).exists() and not any(_covers(out, dep) or _covers(dep, out) for out in produced):
            found.append(f"lists {dep}, which does not exist and no stage writes")
        elif _covers(PACKAGE, dep):
            covered = [src / dep] if (src / dep).is_file() else sorted((src / dep).rglob("*.py"))
            extra = [p.relative_to(src).as_posix() for p in covered
                     if p.relative_to(src).as_posix() not in closure and _does_something(p)]
            if extra:
                found.append(f"lists {dep}, but `sena {command}` never runs {', '.join(extra)}")
    return found


def _copy_pipeline(tmp_path: Path, edit=None) -> Path:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")  # dvc.yaml reads ${sample.pool} from it
    if edit:
        data = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
        edit(data["stages"])
        (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return tmp_path


def _stage_body(stages: dict, name: str) -> dict:
    return stages[name]["do"] if "foreach" in stages[name] else stages[name]


# ---------------------------------------------------------------- tests


def test_every_stage_lists_exactly_the_code_its_command_runs():
    found = problems(REPO)
    assert not found, "dvc.yaml is out of step with the code:\n" + "\n".join(found)


def test_the_closure_follows_what_can_run_and_stops_at_sena_cli():
    qa, pair = command_closure("qa"), command_closure("pair")
    assert "sena_cli/stages/qa.py" in qa  # imported inside the `qa` command function
    assert "sena_cli/stages/pair.py" not in qa  # imported inside another command
    assert {"sena_cli/artifacts.py", "sena_cli/config.py", "sena_cli/cli.py"} <= qa
    # vlm/model.py imports vlm/preference.py inside VLM.preference_logps, which pair calls and qa does not.
    assert "sena_cli/vlm/preference.py" in pair and "sena_cli/vlm/preference.py" not in qa
    # The registry names its benchmarks' modules in strings, imported with importlib when eval runs them.
    evaluate = command_closure("eval")
    assert {"sena_cli/bench/registry.py", "sena_cli/bench/external.py", "sena_cli/bench/amber.py"} <= evaluate
    # The configuration imports no benchmark code: only eval, history and report run sena_cli/bench/.
    for command in ("world", "base", "pool", "sample", "noise", "qa", "pair", "train"):
        assert not [p for p in command_closure(command) if p.startswith("sena_cli/bench/")], command
    assert "sena_cli/bench/__init__.py" not in command_closure("eval")  # a docstring only
    assert all(path.startswith("sena_cli/") for path in command_closure("eval"))


SENA_DEPS = [(name, dep) for name, block in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()
             for dep in _stage_body({name: block}, name).get("deps", []) if dep.startswith(PACKAGE + "/")]


@pytest.mark.parametrize(("stage", "dep"), SENA_DEPS, ids=[f"{s}:{d}" for s, d in SENA_DEPS])
def test_removing_a_code_dep_is_named(tmp_path, stage, dep):
    root = _copy_pipeline(tmp_path, lambda stages: _stage_body(stages, stage)["deps"].remove(dep))
    found = problems(root)
    assert found and all(f"stage '{stage}" in line and "runs" in line for line in found), found
    assert any(f" runs {dep}" in line if dep.endswith(".py") else f" runs {dep}/" in line for line in found)


def test_a_dep_that_no_longer_exists_is_named(tmp_path):
    root = _copy_pipeline(tmp_path, lambda s: _stage_body(s, "pair")["deps"].append("sena_cli/method/gone.py"))
    assert problems(root) == ["stage 'pair' lists sena_cli/method/gone.py, which does not exist and no stage writes"]


def test_a_code_dep_the_command_never_imports_is_named(tmp_path):
    root = _copy_pipeline(tmp_path, lambda s: _stage_body(s, "sample")["deps"].append("sena_cli/method/loss.py"))
    assert problems(root) == ["stage 'sample' lists sena_cli/method/loss.py, but `sena sample` never runs "
                              "sena_cli/method/loss.py"]
