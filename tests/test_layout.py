"""The layout tells the truth (README's Layout): the product imports no fixture, and nothing outside tests/
reaches into tests/ or edits sys.path to find code (sena_fixtures is installed beside sena_cli)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTSIDE_TESTS = ("sena_cli", "sena_fixtures", "benchmarks", "research", "scripts")


def _imports(path: Path) -> set[str]:
    """Top-level package of every import in the file, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((REPO / folder).rglob("*.py"))]


def test_nothing_outside_tests_imports_tests_or_edits_sys_path():
    offenders = [str(p.relative_to(REPO)) for p in _files(*OUTSIDE_TESTS) if "tests" in _imports(p)]
    assert not offenders, f"import from tests/ (move what they need into sena_fixtures/): {offenders}"
    hacks = [str(p.relative_to(REPO)) for p in _files(*OUTSIDE_TESTS) if "sys.path.insert" in p.read_text()]
    assert not hacks, f"sys.path edited (sena_cli and sena_fixtures are installed packages): {hacks}"


def test_the_product_imports_no_fixture():
    offenders = [str(p.relative_to(REPO)) for p in _files("sena_cli") if "sena_fixtures" in _imports(p)]
    assert not offenders, offenders


def test_every_script_that_prints_a_result_line_is_in_benchmarks():
    """benchmarks/ is every script ending in `RESULT <name> <value>`; research/ and scripts/ hold none."""
    stray = [str(p.relative_to(REPO)) for p in _files("research", "scripts") if 'print(f"RESULT ' in p.read_text()]
    assert not stray, f"move to benchmarks/: {stray}"
