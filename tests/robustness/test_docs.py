"""docs/robustness.md says how many cases its tables hold: counted here, so the number stays true."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "robustness.md"


def case_rows(text: str) -> int:
    """Rows of the markdown tables, less each table's header and separator."""
    lines = text.splitlines()
    rows = 0
    for i, line in enumerate(lines):
        if not line.startswith("|") or re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            continue
        is_header = i + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1])
        rows += not is_header
    return rows


def test_the_stated_count_of_cases_is_the_count_of_rows():
    text = DOC.read_text()
    stated = re.search(r"The tables below hold (\d+) cases", text)
    assert stated, "docs/robustness.md no longer states its count of cases"
    assert int(stated.group(1)) == case_rows(text)
