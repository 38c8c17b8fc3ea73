"""dvc.yaml's code deps are the code each stage runs: computed here, not kept by care.

A stage's `cmd` is `sena <command>`; the code it runs is cli.py (its module-level imports and
the command function with the cli helpers it calls) and the import closure of every sena_cli
module those import, function-level imports included (stages import lazily). Each file of
that closure must be covered by a `deps` entry (a folder covers the files under it); each
sena_cli entry must be something the command runs; each relative dep must exist or be
another stage's output.
"""

from __future__ import annotations

import ast
import functools
import shutil
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


def _imports(nodes, module: str, path: Path, src: Path) -> tuple[set[str], set[str]]:
    """(modules these import statements name, parent packages they run first), sena_cli only."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    named = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            named |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            subs = {f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}", src)}
            named |= subs
            if len(subs) < len(node.names):  # some name is defined in `base` itself
                named.add(base)
    named = {m for m in named if m == PACKAGE or m.startswith(PACKAGE + ".")}
    parents = {".".join(m.split(".")[:i]) for m in named for i in range(1, m.count(".") + 1)}
    return named, parents - named


@functools.cache
def command_closure(command: str, src: Path = REPO) -> frozenset[str]:
    """The sena_cli files `sena <command>` runs, as paths relative to src."""
    cli_path = src / PACKAGE / "cli.py"
    tree = _tree(cli_path)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    entry = None
    for fn in functions.values():
        for deco in fn.decorator_list:
            if isinstance(deco, ast.Call) and ast.unparse(deco.func) == "app.command":
                name = deco.args[0].value if deco.args else fn.name.replace("_", "-")
                entry = fn if name == command else entry
    assert entry is not None, f"cli.py has no command '{command}'"
    # The command function and every cli.py helper it calls, transitively.
    used, todo = set(), [entry]
    while todo:
        fn = todo.pop()
        if fn.name not in used:
            used.add(fn.name)
            todo += [functions[n.id] for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id in functions]
    nodes = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    nodes += [n for name in used for n in ast.walk(functions[name])]
    named, parents = _imports(nodes, f"{PACKAGE}.cli", cli_path, src)
    files, seen, todo = {cli_path}, set(), [(m, True) for m in named] + [(m, False) for m in parents]
    while todo:
        module, is_named = todo.pop()
        path = _module_file(module, src)
        if (module, is_named) in seen or path is None:  # None: a namespace package, no file
            continue
        seen.add((module, is_named))
        if not is_named and not _does_something(path):
            continue
        files.add(path)
        more, more_parents = _imports(ast.walk(_tree(path)), module, path, src)
        todo += [(m, True) for m in more] + [(m, False) for m in more_parents]
    return frozenset(f.relative_to(src).as_posix() for f in files)


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
                found.append(f"lists {dep}, but `sena {command}` never imports {', '.join(extra)}")
    return found


def _copy_pipeline(tmp_path: Path, edit=None) -> Path:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
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


def test_the_closure_follows_lazy_imports_and_stops_at_sena_cli():
    qa = command_closure("qa")
    assert "sena_cli/stages/qa.py" in qa  # imported inside the `qa` command function
    assert "sena_cli/stages/pair.py" not in qa  # imported inside another command
    assert "sena_cli/artifacts.py" in qa and "sena_cli/config.py" in qa and "sena_cli/cli.py" in qa
    assert "sena_cli/vlm/preference.py" in qa  # imported inside a method of vlm/model.py
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
    assert problems(root) == ["stage 'sample' lists sena_cli/method/loss.py, but `sena sample` never imports "
                              "sena_cli/method/loss.py"]
