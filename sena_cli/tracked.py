"""What a pipeline stage depends on, read from dvc.yaml: the one list DVC and resume ids share.

DVC reruns `qa@2` when a params key that dvc.yaml lists for it changes; a killed `sena qa
--iter 2` resumes from its journal only when the journal's run id matches. Both must see the
same keys, so the run ids of the resumable stages are built from `tracked_params`, which reads
the stage's `params` list from the project's dvc.yaml (filling in `foreach`'s `${key}`,
`${item}` and `${item.<field>}` for iteration k, and params' values as DVC does) and takes
those keys' values from the loaded params. Keys are read attribute by attribute, so only tracked values are touched.
A stage's run id is built from the params already read and validated: params.yaml is not read again.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from sena_cli import bounded
from sena_cli.config import DEFAULT_PARAMS_FILE, Params, to_dict
from sena_cli.errors import SenaError

PIPELINE_FILE = "dvc.yaml"
# libyaml's parser when PyYAML was built with it (the wheels are): the same safe loading, a tenth of the time
# (dvc.yaml and params.yaml are read on every stage command)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TEMPLATE = re.compile(r"\$\{\s*([^}]*?)\s*\}")


def read_pipeline(root: Path = Path(".")) -> dict | None:
    """The `stages` mapping of root/dvc.yaml; None when root has none (not a sena pipeline folder)."""
    path = Path(root) / PIPELINE_FILE
    if not path.is_file():
        return None
    try:
        data = yaml.load(bounded.read_text(path, what="pipeline file"), Loader=_SAFE_LOADER)
    except yaml.YAMLError:
        raise SenaError(f"{path}: not valid YAML; fix the syntax (`dvc repro` reads it too)") from None
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        raise SenaError(f"{path}: has no 'stages' mapping; restore it from git")
    return stages


def stage_definition(stage: str, k: int | None, root: Path = Path("."), variables: dict | None = None) -> dict | None:
    """Stage `stage` (`stage@k` of a foreach stage) of root/dvc.yaml, templates filled in from
    `variables` (the params as a plain dict; root/params.yaml when not given).

    None when root has no dvc.yaml, the stage is not in it, or k is not one of its foreach keys.
    """
    stages = read_pipeline(root)
    if stages is None or not isinstance(stages.get(stage), dict):
        return None
    return _instances(stage, stages[stage], Path(root), variables).get(stage if k is None else f"{stage}@{k}")


def stage_instances(root: Path = Path(".")) -> dict[str, dict]:
    """Every stage of root/dvc.yaml by DVC's name (`qa@1`), templates filled in; {} without dvc.yaml."""
    out: dict[str, dict] = {}
    for stage, block in (read_pipeline(root) or {}).items():
        out.update(_instances(stage, block, Path(root)))
    return out


def _params_vars(root: Path) -> dict:
    """params.yaml's values: DVC fills `${sample.pool}` in dvc.yaml from them."""
    path = Path(root) / DEFAULT_PARAMS_FILE
    try:
        data = yaml.load(bounded.read_text(path, what="params file"), Loader=_SAFE_LOADER) if path.is_file() else {}
    except (yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _instances(stage: str, block: dict, root: Path, variables: dict | None = None) -> dict[str, dict]:
    where = f"{root / PIPELINE_FILE}: stage '{stage}'"
    variables = _params_vars(root) if variables is None else variables
    if "foreach" not in block:
        return {stage: _fill(block, variables, where)}
    foreach = block["foreach"]
    entries = foreach.items() if isinstance(foreach, dict) else [(None, item) for item in foreach]
    return {f"{stage}@{item if key is None else key}":
            _fill(block.get("do") or {}, {**variables, "key": None if key is None else str(key), "item": item},
                  where)
            for key, item in entries}


def _fill(value: Any, scope: dict, where: str) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, scope, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, scope, where) for v in value]
    if isinstance(value, str):
        return _TEMPLATE.sub(lambda m: str(_lookup(m.group(1), scope, where)), value)
    return value


def _lookup(expr: str, scope: dict, where: str) -> Any:
    name, *fields = expr.split(".")
    value = scope.get(name)
    for f in fields:
        value = value.get(f) if isinstance(value, dict) else None
    if value is None:
        raise SenaError(f"{where}: cannot resolve '${{{expr}}}'; sena reads ${{key}}, ${{item}} and "
                        "${item.<field>} of a foreach, and params.yaml's keys")
    return value


def tracked_keys(stage: str, k: int | None, root: Path = Path("."), variables: dict | None = None) -> list[str] | None:
    """The params.yaml keys `stage@k` lists in dvc.yaml, in order; None without a definition."""
    definition = stage_definition(stage, k, root, variables)
    if definition is None:
        return None
    keys = []
    for entry in definition.get("params") or []:
        if isinstance(entry, str):
            keys.append(entry)
        elif isinstance(entry, dict) and set(entry) == {DEFAULT_PARAMS_FILE}:
            keys += list(entry[DEFAULT_PARAMS_FILE] or [])
        else:
            raise SenaError(f"{Path(root) / PIPELINE_FILE}: stage '{stage}' tracks {entry!r}; sena stages read "
                            f"only {DEFAULT_PARAMS_FILE}, list its keys as plain strings")
    return keys


def tracked_params(stage: str, k: int | None, params: Params, root: Path = Path(".")) -> dict:
    """{dotted key: value} for every params key `stage@k` tracks in root/dvc.yaml.

    In a folder without dvc.yaml, or with a dvc.yaml that does not define the stage, every
    section counts: a run id then changes with any parameter, which can cost a resume but
    never mixes runs.
    """
    everything = to_dict(params)
    keys = tracked_keys(stage, k, root, everything)
    if keys is None:
        return everything
    return {key: _value(params, key, stage, root) for key in keys}


def _value(params: Params, key: str, stage: str, root: Path) -> Any:
    value: Any = params
    for part in key.split("."):
        if dataclasses.is_dataclass(value) and part in {f.name for f in dataclasses.fields(value)}:
            value = getattr(value, part)
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise SenaError(f"{Path(root) / PIPELINE_FILE}: stage '{stage}' tracks '{key}', which is not a "
                            f"params key; fix the stage's params list")
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
