"""Params keys: what dvc.yaml tracks, what resume ids use and what the code reads are one list.

- `tracked_params` fills in dvc.yaml's foreach templates as DVC does (checked against DVC's
  own resolver);
- every resumable stage's run id, the very `run_id = fingerprint(...)` expression of its
  module, changes when any key its stage tracks changes and stays put for every other key;
- every params key a command's code reads (found statically over the code it can run, the
  same walk as tests/test_deps.py) is tracked by its stage.
"""

from __future__ import annotations

import ast
import builtins
import copy
import dataclasses
import shutil
import sys
import typing
from pathlib import Path

import pytest
import yaml

from sena_cli.config import PER_ITERATION_SECTIONS, Params, load_params
from sena_cli.errors import SenaError
from sena_cli.tracked import stage_definition, stage_instances, tracked_keys, tracked_params
from tests.test_deps import PACKAGE, REPO, _command, _tree, command_code

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(REPO / "params.yaml")


# ---------------------------------------------------------------- resolving dvc.yaml


def test_stage_definitions_are_the_ones_dvc_resolves(tmp_path):
    from dvc.repo import Repo

    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    repo = Repo.init(str(tmp_path), no_scm=True)
    try:
        resolved = {stage.name: stage for stage in repo.index.stages}
    finally:
        repo.close()
    ours = stage_instances(tmp_path)
    assert set(resolved) == set(ours)
    for name, stage in resolved.items():
        base, _, key = name.partition("@")
        keys = tracked_keys(base, key or None, tmp_path)
        dvc_keys = [k for dep in stage.deps if hasattr(dep, "params") for k in dep.params]
        assert keys == dvc_keys, name
        assert [d for d in ours[name]["deps"]] == [dep.def_path for dep in stage.deps if not hasattr(dep, "params")]
        assert stage.cmd == ours[name]["cmd"]


def test_tracked_params_fill_in_the_iteration(params):
    values = tracked_params("qa", 2, params, REPO)
    assert "iterations.2.qa" in values and "iterations.1.qa" not in values
    assert values["qa"]["prompts"]["question_generate"] == params.qa.prompts.question_generate
    assert values["model.dtype"] == params.model.dtype
    assert stage_definition("noise", 3, REPO)["deps"][-1] == "models/iter2"  # ${item.prev}
    assert stage_definition("eval", 0, REPO)["cmd"] == "sena eval --iter 0"  # ${item} of a list
    assert stage_definition("qa", 9, REPO) is None


def test_without_dvc_yaml_every_param_counts(params, tmp_path):
    assert set(tracked_params("qa", 1, params, tmp_path)) == {f.name for f in dataclasses.fields(Params)}


def test_a_tracked_key_params_lacks_is_one_line_naming_it(params, tmp_path):
    text = (REPO / "dvc.yaml").read_text().replace("- qa.drop_question_words", "- qa.drop_words", 1)
    (tmp_path / "dvc.yaml").write_text(text)
    with pytest.raises(SenaError, match=r"dvc.yaml: stage 'pair' tracks 'qa.drop_words', which is not a params key"):
        tracked_params("pair", 1, params, tmp_path)


def test_a_template_sena_cannot_fill_is_named(params, tmp_path):
    text = (REPO / "dvc.yaml").read_text().replace("iterations.${key}.qa", "iterations.${vars.k}.qa", 1)
    (tmp_path / "dvc.yaml").write_text(text)
    with pytest.raises(SenaError, match=r"cannot resolve '\$\{vars.k\}'"):
        tracked_params("qa", 1, params, tmp_path)


# ---------------------------------------------------------------- run ids


class _Fixed:
    """Stands for a stage's inputs (manifest, pairs, process state): the same in every run compared."""

    def __getattr__(self, name):
        return self

    def __str__(self):
        return "fixed input"


def _run_id_expression(module: Path) -> ast.expr | None:
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["run_id"]:
            return node.value
    return None


RESUMABLE = sorted(p.stem for p in (REPO / PACKAGE / "stages").glob("*.py") if _run_id_expression(p) is not None)


def _leaves(value, path=()):
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _leaves(getattr(value, f.name), (*path, f.name))
    elif isinstance(value, dict) and value:
        for key in value:
            yield from _leaves(value[key], (*path, key))
    else:
        yield path


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, copy.deepcopy(value[0]) if value else "x"]
    if isinstance(value, dict):
        return {**value, "seed": 7}
    raise AssertionError(f"no change known for {value!r}")


def _with(params: Params, path: tuple, value) -> Params:
    out = copy.deepcopy(params)
    holder = out
    for part in path[:-1]:
        holder = holder[part] if isinstance(holder, dict) else getattr(holder, part)
    if isinstance(holder, dict):
        holder[path[-1]] = value
    else:
        setattr(holder, path[-1], value)
    return out


def _get(params: Params, path: tuple):
    value = params
    for part in path:
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


@pytest.mark.parametrize("stage", RESUMABLE)
def test_a_run_id_changes_with_exactly_the_keys_the_stage_tracks(stage, params, tmp_path):
    """The stage's own run id expression, evaluated with each params key changed in turn."""
    assert {"qa", "pair", "eval"} <= set(RESUMABLE)
    module = REPO / PACKAGE / "stages" / f"{stage}.py"
    expr = _run_id_expression(module)
    mod = sys.modules.get(f"{PACKAGE}.stages.{stage}") or __import__(f"{PACKAGE}.stages.{stage}", fromlist=["_"])
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    k = 2
    code = compile(ast.Expression(expr), str(module), "eval")
    free = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)} - set(vars(mod)) - set(dir(builtins))

    def run_id(p: Params) -> str:
        scope = {**vars(mod), **{name: _Fixed() for name in free}, "params": p, "k": k, "root": tmp_path}
        return eval(code, scope)  # noqa: S307 - the stage's own expression, read from its source

    # What dvc.yaml tracks for stage@2, read here without sena's resolver.
    block = STAGES[stage]["do"] if "foreach" in STAGES[stage] else STAGES[stage]
    tracked = [key.replace("${key}", str(k)).replace("${item}", str(k)) for key in block["params"]]
    base = run_id(params)
    assert base == run_id(copy.deepcopy(params))
    wrong = []
    for path in _leaves(params):
        dotted = ".".join(path)
        is_tracked = any(dotted == key or dotted.startswith(key + ".") for key in tracked)
        moved = run_id(_with(params, path, _changed(_get(params, path)))) != base
        if moved != is_tracked:
            state = f"{'tracked' if is_tracked else 'untracked'}, run id {'moved' if moved else 'stayed'}"
            wrong.append(f"{dotted} ({state})")
    assert not wrong, f"{stage}'s run id disagrees with dvc.yaml on: " + ", ".join(wrong)


# ---------------------------------------------------------------- what the code reads


def _sections() -> dict[str, tuple[str, type]]:
    """Each params dataclass by name -> (its dotted place in Params, the class)."""
    out = {"Params": ("", Params)}

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                out[hints[f.name].__name__] = (prefix + f.name, hints[f.name])
                walk(hints[f.name], prefix + f.name + ".")

    walk(Params, "")
    return out


SECTIONS = _sections()
# Files that read params for another purpose: validation, and tracked.py, which reads only tracked keys.
NOT_STAGE_READS = {f"{PACKAGE}/config.py", f"{PACKAGE}/tracked.py"}
# The `--iter` range check reads loop.iterations and nothing else of it; tracking it would rerun
# every iteration when one is added.
RANGE_CHECK_ONLY = {"noise", "qa", "pair", "train", "eval"}
# The launcher (launch.<stage>, sena_cli/launch.py) changes how many processes run a stage, not what it
# writes, so dvc.yaml tracks no launch key: going from 1 to 8 GPUs reruns nothing. Read by the launching
# code only; a stage's own code reading it would count as any other read.
LAUNCHER_READERS = {f"{PACKAGE}/cli.py", f"{PACKAGE}/launch.py"}


def _annotation(node) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.split("|")[0].strip().rpartition(".")[2]
    if isinstance(node, ast.Name | ast.Attribute):
        return ast.unparse(node).rpartition(".")[2]
    if isinstance(node, ast.BinOp):  # `Params | None`
        return _annotation(node.left)
    return None


def _extend(place, attr: str):
    path, cls = place
    if cls is None or attr not in {f.name for f in dataclasses.fields(cls)}:
        return None
    tp = typing.get_type_hints(cls)[attr]
    return (f"{path}.{attr}" if path else attr, tp if dataclasses.is_dataclass(tp) else None)


def _place(node, roots):
    """(dotted params path, dataclass or None) of `params.qa.prompts`-like expressions."""
    if isinstance(node, ast.Name):
        return roots.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _place(node.value, roots)
        return _extend(base, node.attr) if base else None
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.value, ast.Call) \
            and ast.unparse(node.value.func).rpartition(".")[2] in ("to_dict", "asdict") and node.value.args:
        base = _place(node.value.args[0], roots)  # to_dict(params)["train"]
        return _extend(base, node.slice.value) if base else None
    return None


def function_reads(fn: ast.FunctionDef, typed: dict[str, set[str]] | None = None) -> set[str]:
    """Params paths a function (nested functions included) reads; '' = all of them.

    A section handed straight to a function of `typed` (name -> the sections its parameters are
    annotated with, as `model: ModelParams`) is not read whole here: that function's reads count."""
    roots = {}
    for sub in ast.walk(fn):
        if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
            for a in sub.args.posonlyargs + sub.args.args + sub.args.kwonlyargs:
                if a.annotation is not None:
                    name = _annotation(a.annotation)
                else:  # an unannotated `params` is the Params by the house's naming
                    name = "Params" if a.arg == "params" else None
                if name in SECTIONS:
                    roots[a.arg] = SECTIONS[name]
    aliases = set()  # `qp = params.qa.prompts`: reads go through qp
    grown = True
    while grown:
        grown = False
        for sub in ast.walk(fn):
            if isinstance(sub, ast.Assign) and len(sub.targets) == 1:
                target, value = sub.targets[0], sub.value
                pairs = zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) \
                    else [(target, value)]
                for t, v in pairs:
                    place = _place(v, roots)
                    if isinstance(t, ast.Name) and place and place[1] is not None and t.id not in roots:
                        roots[t.id], grown = place, True
                        aliases.add(id(v))
    nodes = [n for n in ast.walk(fn) if isinstance(n, ast.Attribute | ast.Subscript)]
    inner = {id(n.value) for n in nodes if _place(n, roots) and _place(n.value, roots)}
    for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
        sections = (typed or {}).get(ast.unparse(call.func).rpartition(".")[2], set())
        for arg in [*call.args, *(k.value for k in call.keywords)]:
            place = _place(arg, roots)
            if place and place[1] is not None and place[1].__name__ in sections:
                aliases.add(id(arg))
    reads = {_place(n, roots)[0] for n in nodes if id(n) not in inner | aliases and _place(n, roots)}
    for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call) and n.args):
        if ast.unparse(call.func).rpartition(".")[2] in ("to_dict", "asdict", "getattr", "vars") \
                and id(call) not in {id(n.value) for n in nodes}:
            place = _place(call.args[0], roots)
            if place:
                reads.add(place[0])
    return reads


def _typed_functions(codes) -> dict[str, set[str]]:
    """Function name -> the params sections its parameters are annotated with, over `codes`."""
    typed: dict[str, set[str]] = {}
    for code in codes:
        for node in code:
            for fn in (n for n in ast.walk(node) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
                args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
                names = {_annotation(a.annotation) for a in args if a.annotation is not None}
                typed.setdefault(fn.name, set()).update(names & set(SECTIONS))
    return typed


def command_reads(command: str) -> dict[str, set[str]]:
    """Params path -> the functions that read it, over the code the command can run."""
    out: dict[str, set[str]] = {}
    codes = command_code(command)
    typed = _typed_functions(code for path, code in codes.items() if path not in NOT_STAGE_READS)
    for path, code in sorted(codes.items()):
        if path in NOT_STAGE_READS:
            continue
        for node in code:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for read in function_reads(node, typed):
                    out.setdefault(read, set()).add(f"{path}:{node.name}")
    return out


def _per_iteration(command: str) -> bool:
    """Whether the command runs with `iterations.K` laid over the file (cli's for_iteration)."""
    tree = _tree(REPO / PACKAGE / "cli.py")
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    fn = functions["evaluate" if command == "eval" else command]
    called, todo = set(), [fn]
    while todo:
        f = todo.pop()
        for n in ast.walk(f):
            if isinstance(n, ast.Name) and n.id not in called:
                called.add(n.id)
                todo += [functions[n.id]] if n.id in functions else []
    return "for_iteration" in called


def untracked_reads(stage: str, k: str | None) -> list[str]:
    definition = stage_definition(stage, k, REPO)
    command = _command(definition["cmd"])
    keys = tracked_keys(stage, k, REPO)
    missing = []
    for read, where in sorted(command_reads(command).items()):
        if read == "loop.iterations" and stage in RANGE_CHECK_ONLY:
            continue
        if read.partition(".")[0] == "launch" and {w.partition(":")[0] for w in where} <= LAUNCHER_READERS:
            continue
        if not any(read == key or read.startswith(key + ".") for key in keys):
            missing.append(f"{read or 'every key'} (read in {', '.join(sorted(where))})")
        section = read.partition(".")[0]
        if _per_iteration(command) and section in PER_ITERATION_SECTIONS and f"iterations.{k}.{section}" not in keys:
            missing.append(f"iterations.{k}.{section} (its {read} comes from there when set)")
    return missing


def test_the_read_finder_sees_through_aliases_and_sections():
    reads = command_reads("qa")
    assert "qa.prompts.question_generate" in reads  # `qp = params.qa.prompts`, then `qp.question_generate`
    assert "qa.prompts.enhance" in reads  # method/prompts.py: `p: QAPrompts`, then `p.enhance`
    assert "model.dtype" in reads and "pair.batch_size" not in reads
    assert "eval.judge.base_url" in command_reads("eval")  # judge.py: `params: JudgeParams`
    assert "train.lr" in command_reads("train")  # `tp = params.train`, then `tp.lr`
    # `Preprocessor.from_params(params.model, ...)` reads what from_params reads, not the whole section
    noise = command_reads("noise")
    assert "model.processor" in noise and "model" not in noise and "model.dtype" not in noise


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_tracks_every_params_key_its_code_reads(stage):
    keys = [str(k) for k in STAGES[stage]["foreach"]] if "foreach" in STAGES[stage] else [None]
    missing = {k: untracked_reads(stage, k) for k in keys}
    assert not any(missing.values()), f"dvc.yaml: stage '{stage}' reads params it does not track: {missing}"
