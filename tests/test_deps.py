"""dvc.yaml's code deps are the code each stage runs: computed, not kept by care.

The code `sena <command>` can run is computed by sena_cli/codedeps.py (from the command's function
in cli.py through everything it can import, at module level or lazily; see its docstring), and
stage `code` writes its fingerprint to data/code/<command>.json. Here: each stage depends on its
own command's fingerprint and on no .py file; the `code` stage on the whole sena_cli folder; each
relative dep exists or is another stage's output; a fingerprint lists exactly the files its command
can run and changes with their code, not with their comments, docstrings or help texts.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import yaml

from sena_cli import layout
from sena_cli.codedeps import PACKAGE, _tree, command_closure, command_code, commands, fingerprints
from sena_cli.tracked import stage_instances

REPO = Path(__file__).resolve().parents[1]
__all__ = ["PACKAGE", "REPO", "_tree", "command_code"]  # tests/test_tracked.py walks the same code


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
    if command not in commands(src):
        return [f"runs `sena {command}`, which cli.py does not have"]
    found = []
    if command == "code":  # it fingerprints every command: any file of the package may change one
        code = [d for d in deps if _covers(PACKAGE, d)]
        if code != [PACKAGE]:
            found.append(f"lists {code} of the code, not the whole {PACKAGE} folder")
        if layout.code_dir().as_posix() not in _paths(stage.get("outs")):
            found.append(f"does not write {layout.code_dir().as_posix()}")
        return found
    own = layout.code_file(command).as_posix()
    if own not in deps:
        found.append(f"runs `sena {command}` but its deps do not list {own}, the fingerprint of its code")
    for dep in deps:
        if Path(dep).is_absolute():
            continue  # e.g. a benchmark file outside the repo: the user's to keep
        if _covers(layout.code_dir().as_posix(), dep) and dep != own:
            found.append(f"lists {dep}, the code of another command than `sena {command}`")
        elif _covers(PACKAGE, dep):
            found.append(f"lists {dep}: its code is in {own} (only what `sena {command}` runs of it)")
        elif not (src / dep).exists() and not any(_covers(out, dep) or _covers(dep, out) for out in produced):
            found.append(f"lists {dep}, which does not exist and no stage writes")
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


def test_every_stage_depends_on_the_fingerprint_of_its_own_code():
    found = problems(REPO)
    assert not found, "dvc.yaml is out of step with the code:\n" + "\n".join(found)


def test_the_closure_follows_what_can_run_and_stops_at_sena_cli():
    qa, pair, sample = command_closure("qa"), command_closure("pair"), command_closure("sample")
    assert "sena_cli/stages/qa.py" in qa  # imported inside the `qa` command function
    assert "sena_cli/stages/pair.py" not in qa  # imported inside another command
    assert {"sena_cli/artifacts.py", "sena_cli/config.py", "sena_cli/cli.py"} <= qa
    # vlm/model.py imports vlm/preference.py inside VLM.preference_logps, which pair calls and qa does not.
    assert "sena_cli/vlm/preference.py" in pair and "sena_cli/vlm/preference.py" not in qa
    # The registry finds the benchmark modules (pkgutil) and eval resolves their runners by name (importlib).
    evaluate = command_closure("eval")
    assert {"sena_cli/bench/registry.py", "sena_cli/bench/external.py", "sena_cli/bench/amber.py"} <= evaluate
    # The configuration imports no benchmark code: only eval, history and report run sena_cli/bench/.
    for command in ("world", "base", "pool", "sample", "noise", "qa", "pair", "train"):
        assert not [p for p in command_closure(command) if p.startswith("sena_cli/bench/")], command
    assert "sena_cli/bench/__init__.py" not in command_closure("eval")  # a docstring only
    assert "sena_cli/codedeps.py" not in evaluate | qa | sample  # only `sena code` runs it
    assert all(path.startswith("sena_cli/") for path in command_closure("eval"))


STAGES = [name for name, block in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()
          if name != "code"]


@pytest.mark.parametrize("stage", STAGES)
def test_removing_a_stage_s_fingerprint_dep_is_named(tmp_path, stage):
    command = _command(_stage_body(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"], stage)["cmd"])
    own = f"data/code/{command}.json"
    root = _copy_pipeline(tmp_path, lambda stages: _stage_body(stages, stage)["deps"].remove(own))
    assert problems(root) == [f"stage '{stage}' runs `sena {command}` but its deps do not list {own}, "
                              "the fingerprint of its code"]


def test_another_command_s_fingerprint_is_named(tmp_path):
    root = _copy_pipeline(tmp_path, lambda s: _stage_body(s, "pair")["deps"].append("data/code/qa.json"))
    assert problems(root) == ["stage 'pair' lists data/code/qa.json, the code of another command than `sena pair`"]


def test_a_code_file_listed_again_is_named(tmp_path):
    root = _copy_pipeline(tmp_path, lambda s: _stage_body(s, "sample")["deps"].append("sena_cli/method/loss.py"))
    assert problems(root) == ["stage 'sample' lists sena_cli/method/loss.py: its code is in data/code/sample.json "
                              "(only what `sena sample` runs of it)"]


def test_a_dep_that_no_longer_exists_is_named(tmp_path):
    root = _copy_pipeline(tmp_path, lambda s: _stage_body(s, "pair")["deps"].append("data/gone.json"))
    assert problems(root) == ["stage 'pair' lists data/gone.json, which does not exist and no stage writes"]


def test_the_code_stage_must_depend_on_the_whole_package(tmp_path):
    root = _copy_pipeline(tmp_path, lambda s: s["code"].update(deps=["sena_cli/cli.py"]))
    assert problems(root) == ["stage 'code' lists ['sena_cli/cli.py'] of the code, not the whole sena_cli folder"]


# ---------------------------------------------------------------- the fingerprints


def _copy_package(tmp_path: Path) -> Path:
    shutil.copytree(REPO / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: {old!r} found {text.count(old)} times"
    path.write_text(text.replace(old, new))


def _changed(before: dict, after: dict) -> set[str]:
    return {command for command in before if before[command] != after[command]}


@pytest.fixture(scope="module")
def shipped() -> dict[str, dict[str, str]]:
    return fingerprints(REPO)


def test_a_fingerprint_lists_exactly_the_files_its_command_can_run(shipped):
    assert set(shipped) == set(commands()) and "qa" in shipped
    for command, files in shipped.items():
        assert set(files) == command_closure(command), command


def test_comments_docstrings_and_help_texts_change_no_fingerprint(tmp_path, shipped):
    src = _copy_package(tmp_path)
    _edit(src / "sena_cli/config.py", "from __future__ import annotations\n",
          "from __future__ import annotations  # a comment\n\n# and another one\n")
    config = (src / "sena_cli/config.py").read_text()
    docstring = config.split('"""')[1]
    _edit(src / "sena_cli/config.py", docstring, docstring + " Reworded.")
    _edit(src / "sena_cli/cli.py", 'help="Show full tracebacks on errors."', 'help="Show the full traceback."')
    _edit(src / "sena_cli/stages/qa.py", "def run_qa(", "def run_qa(  # the stage\n    ")
    assert fingerprints(src) == shipped


def test_help_in_field_metadata_is_dropped(tmp_path):
    one, two = tmp_path / "one.py", tmp_path / "two.py"
    one.write_text('x = field(default=1, metadata={"help": "one", "range": (0, 2)})\n')
    two.write_text('x = field(default=1, metadata={"help": "two", "range": (0, 2)})\n')
    three = tmp_path / "three.py"
    three.write_text('x = field(default=1, metadata={"help": "two", "range": (0, 3)})\n')
    one, two, three = (ast.unparse(_tree(path)) for path in (one, two, three))
    assert one == two != three


def test_a_stage_s_code_changes_only_its_own_fingerprint(tmp_path, shipped):
    src = _copy_package(tmp_path)
    _edit(src / "sena_cli/stages/noise.py", "def run_noise(", "NOTE = 1\n\n\ndef run_noise(")
    assert _changed(shipped, fingerprints(src)) == {"noise"}
    # A command's own function in cli.py is its code alone; the code every command runs is everyone's.
    _edit(src / "sena_cli/cli.py", '_summary("report", info,', '_summary("the report", info,')
    assert _changed(shipped, fingerprints(src)) == {"noise", "report"}


def test_a_benchmark_s_code_changes_only_eval_s_fingerprint(tmp_path, shipped):
    src = _copy_package(tmp_path)
    # Its scoring code runs in eval only; its module-level declaration (the record) is read by history and
    # report too, for the charts.
    _edit(src / "sena_cli/bench/amber.py", "return round(score / num * 100, 1)", "return round(100 * score / num, 1)")
    assert _changed(shipped, fingerprints(src)) == {"eval"}


def test_shared_code_changes_every_fingerprint_that_runs_it(tmp_path, shipped):
    src = _copy_package(tmp_path)
    _edit(src / "sena_cli/method/questions.py", "from __future__ import annotations\n",
          "from __future__ import annotations\n\nNOTE = 1\n")
    changed = _changed(shipped, fingerprints(src))
    assert changed == {c for c, files in shipped.items() if "sena_cli/method/questions.py" in files} and changed


def test_adding_a_benchmark_changes_only_eval_history_and_report(tmp_path, shipped):
    src = _copy_package(tmp_path)
    (src / "sena_cli/bench/dummy.py").write_text(
        "from sena_cli.bench.record import Benchmark, Chart\n\n\n"
        "def run(ctx, vlm, tick):\n    return {'score': 1.0}, []\n\n\n"
        "def count(ctx):\n    return 0\n\n\n"
        "BENCHMARK = Benchmark('dummy', 'dummy', (), 'sena_cli.bench.dummy:run', 'sena_cli.bench.dummy:count',"
        " ('score',), (Chart('Dummy', (('score', 'score'),)),))\n")
    changed = _changed(shipped, fingerprints(src))
    # `sena params` and `sena profile` check every benchmark's section too, but are no stage of dvc.yaml.
    assert "eval" in changed and changed <= {"eval", "history", "report", "params", "profile"}, sorted(changed)
