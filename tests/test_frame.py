"""The stage frame's checks (sena_cli/frame.py): what each shape accepts and the words it refuses with."""

import pytest

from sena_cli.errors import SenaError
from sena_cli.frame import (
    METRICS,
    NUMBER,
    TEXT,
    TEXTS,
    WHOLE,
    Each,
    check_iteration,
    fault,
    given,
    made_by,
    read_json,
    read_records,
)


def test_shapes_name_the_field_that_is_wrong():
    row = {"id": "a", "n": 3}
    assert fault(row, {"id": TEXT, "n": WHOLE, "note?": TEXT}) is None  # an optional field may be absent
    assert fault(row, {"id": TEXT, "size": WHOLE}, "line 4") == "line 4 has no 'size'"
    assert fault({**row, "n": True}, {"n": WHOLE}, "line 4") == "line 4: 'n' must be a whole number, got true"
    assert fault({"x": float("inf")}, {"x": NUMBER}) == "'x' must be a finite number, got Infinity"
    assert fault([{"a": ["b", 1]}], [{"a": TEXTS}]) == "item 1: 'a' must be a list of text, got [\"b\", 1]"
    assert fault({"k": {"a": [{"b": 1}, {}]}}, Each({"a": [{"b": WHOLE}]})) == "'k.a[1]' has no 'b'"
    assert fault({"pope": {"random": {"f1": 0.5}}, "judge_model": "m"}, METRICS) is None
    assert fault({"pope": {"random": {"f1": None}}}, METRICS) == \
        "'pope.random.f1' must be a finite number or text, got null"
    assert fault([], METRICS) == "the file must be a JSON object, got []"


def test_readers_give_one_line_naming_the_file_and_the_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a"}\n\n{"id": 2}\n')
    with pytest.raises(SenaError) as err:
        read_records(path, made_by("qa", 1), {"id": TEXT})
    assert str(err.value) == f"{path}: line 3: 'id' must be text, got 2; rerun `sena qa --iter 1`"  # blank lines count
    path.write_text('{"id": "a"}\n{"id": \n')
    with pytest.raises(SenaError, match=r"records.jsonl: malformed JSON at line 2; rerun `sena qa --iter 1`$"):
        read_records(path, made_by("qa", 1))
    path.write_bytes(b'{"id": "caf\xe9"}\n')
    with pytest.raises(SenaError, match=r"not UTF-8 text \(byte 0xe9 at byte 11\)"):
        read_records(path, made_by("qa", 1))
    with pytest.raises(SenaError, match=r"gone.json: MM-Vet file not found; fix eval.mm_vet.file$"):
        read_json(tmp_path / "gone.json", given("MM-Vet file", "eval.mm_vet.file"))
    with pytest.raises(SenaError, match=r"missing; run `sena sample --iter 2` first$"):
        read_records(tmp_path / "manifest.jsonl", made_by("sample", 2))


def test_the_iteration_check():
    check_iteration(0, "eval", 3, first=0)
    with pytest.raises(SenaError, match=r"^--iter 4: qa runs for iterations 1..loop.iterations \(3\)$"):
        check_iteration(4, "qa", 3)
