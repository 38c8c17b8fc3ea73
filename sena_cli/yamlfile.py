"""YAML files read and edited safely: the strict loader and the in-place profile editor.

`read_yaml` refuses, in one line naming the file, what a params file must never hold: a key
given twice at any depth (the second would silently replace the first), anchors and aliases
(refused as they are met, so an alias bomb cannot hang the loader), bytes that are not UTF-8,
a file over 1 MiB. `apply_profile` lays a profile over a YAML file as a document (ruamel's
round trip), so comments, key order and untouched keys stay; a profile key set to null (`~`)
is removed from the file (how `profiles/paper.yaml` takes out the embedded profile's
per-iteration learning rates); `set_keys` sets dotted keys the same way (`sena pool --add`).
Neither knows parameter names: the caller passes the validator.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sena_cli import bounded
from sena_cli.errors import SenaError

MAX_PARAMS_BYTES = 1 << 20  # the shipped file is ~8 KB; a bigger one is not a params file


class _Refused(Exception):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases as it meets them, before anything is expanded
    (an alias bomb is refused in microseconds, not expanded for minutes)."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise _Refused(f"YAML anchors and aliases are not allowed ({sign}{event.anchor} at line "
                           f"{event.start_mark.line + 1}); write the values out")
        return super().compose_node(parent, index)


def read_yaml(path: Path) -> Any:
    """A YAML mapping file as plain data; every problem is one SenaError line naming the file."""
    try:
        bounded.regular(path, "point to a params file")  # a FIFO or a device would block or never end
        with open(path, "rb") as f:
            raw = f.read(MAX_PARAMS_BYTES + 1)
    except OSError as exc:
        raise SenaError(f"{path}: cannot be read ({exc.strerror}); check the file and its permissions") from None
    if len(raw) > MAX_PARAMS_BYTES:
        raise SenaError(f"{path}: larger than {MAX_PARAMS_BYTES >> 20} MiB, which no params file needs; "
                        "check it is the right file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SenaError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start}, line {line}); "
                        "save the file as UTF-8") from None
    loader = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        if node is None:
            return {}
        _refuse_duplicate_keys(node, "")
        data = loader.construct_document(node)
        return {} if data is None else data
    except _Refused as exc:
        raise SenaError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1})"
        elif isinstance(exc, yaml.reader.ReaderError):
            where = f" (character #x{exc.character:04x} at position {exc.position})"
        else:
            where = ""
        raise SenaError(f"{path}: not valid YAML{where}; fix the syntax") from None
    finally:
        if loader is not None:
            loader.dispose()


def _refuse_duplicate_keys(node, prefix: str) -> None:
    """A key given twice would silently replace the first (a second `train:` resets the section)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            if key in seen:
                raise _Refused(f"key '{prefix}{key}' is given twice (line {key_node.start_mark.line + 1}); "
                               "keep one of them")
            seen.add(key)
            _refuse_duplicate_keys(value_node, f"{prefix}{key}.")
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{prefix.rstrip('.')}[{i}].")


def merge(base: dict, override: dict) -> dict:
    """base with override's keys laid over it, mappings merged key by key; a key set to None is removed."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


Validate = Callable[[Any, str], dict]  # (data, source) -> every setting as a plain dict, or one SenaError


def apply_profile(params_file: str | Path, profile_file: str | Path, validate: Validate) -> dict:
    """Lay profile_file's keys over params_file, in place; returns the changed keys and their new values
    (None for a key removed).

    The file is edited as a YAML document, not rewritten from the settings: its comments, key
    order and every key the profile does not name stay as they are. The result is validated
    (as a whole and as written) before it atomically replaces the file.
    """
    params_file, profile_file = Path(params_file), Path(profile_file)
    if not profile_file.is_file():
        raise SenaError(f"{profile_file}: profile not found; see profiles/ for the shipped ones")
    overrides = read_yaml(profile_file)
    if not isinstance(overrides, dict):
        raise SenaError(f"{profile_file}: must be a mapping of sections to keys")
    return _edit(params_file, overrides, validate, str(profile_file), f"apply {profile_file} by hand")


def set_keys(params_file: str | Path, values: dict[str, Any], validate: Validate) -> dict:
    """Set dotted keys (`{"sample.pool": "pool"}`) in a YAML file, in place, as `apply_profile` lays a
    profile: comments, key order and every other key stay; validated before it atomically replaces the
    file. Returns the keys that changed and their new values."""
    overrides: dict = {}
    for dotted, value in values.items():
        *sections, last = dotted.split(".")
        node = overrides
        for name in sections:
            node = node.setdefault(name, {})
        node[last] = value
    return _edit(Path(params_file), overrides, validate, str(params_file),
                 "set " + ", ".join(f"{k}: {v}" for k, v in values.items()) + " by hand")


def _edit(params_file: Path, overrides: dict, validate: Validate, source: str, by_hand: str) -> dict:
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError as RoundTripError

    from sena_cli.artifacts import atomic_write_text

    if not params_file.is_file():
        raise SenaError(f"{params_file}: params file not found; run from the project root or pass --params FILE")
    base = validate(read_yaml(params_file), str(params_file))
    merged = validate(merge(base, overrides), source)
    document = YAML()  # round-trip mode: comments and key order survive
    document.preserve_quotes = True
    document.width = 100  # the width params.yaml is written at, so long strings keep their line breaks
    document.indent(mapping=2, sequence=2, offset=0)
    document.representer.add_representer(float, _float)
    try:
        tree = document.load(params_file.read_text())
    except RoundTripError:
        raise SenaError(f"{params_file}: not valid YAML; fix the syntax") from None
    tree = _lay_over(tree if tree is not None else {}, overrides)
    out = io.StringIO()
    document.dump(tree, out)
    if validate(yaml.safe_load(out.getvalue()) or {}, str(params_file)) != merged:
        raise SenaError(f"{params_file}: the change could not be written into this file as it is laid out; "
                        f"{by_hand}")
    atomic_write_text(params_file, out.getvalue())
    before, after = leaves(base), leaves(merged)
    changed = {key: after[key] for key in after if before.get(key) != after[key]
               and not (after[key] == {} and any(k.startswith(key + ".") for k in before))}
    removed = {key: None for key in before if key not in after and not any(k.startswith(key + ".") for k in after)}
    return {**changed, **removed}


def _float(representer, value: float):
    """A float as YAML 1.1 (PyYAML) reads it back: 2e-06 would be a string there, 2.0e-06 is a number."""
    text = repr(value)
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        text = f"{mantissa}.0e{exponent if exponent[0] in '+-' else '+' + exponent}"
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


def _lay_over(tree, overrides: dict):
    """Set overrides' leaves inside a round-trip YAML mapping, keeping everything else of it; remove
    those set to None."""
    for key, value in overrides.items():
        if value is None:
            tree.pop(key, None)
        elif isinstance(value, dict) and isinstance(tree.get(key), dict):
            _lay_over(tree[key], value)
        else:
            tree[key] = value
    return tree


def leaves(d: dict, prefix: str = "") -> dict:
    """{dotted key: value} of a nested mapping's leaves (an empty mapping is a leaf)."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
