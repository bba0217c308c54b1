"""File readers: one-line errors naming the file and the line."""

import pytest

from lmboard.errors import UsageError
from lmboard.io import read_csv_dicts, read_csv_rows, read_json, read_json_list, read_jsonl


def test_jsonl_lines_and_errors(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"a": 1}\n\n{"b": "x\u2028y"}\n')
    assert read_jsonl(p) == [(1, {"a": 1}), (3, {"b": "x\u2028y"})]  # U+2028 inside a string is not a line break
    p.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(UsageError, match=r"a.jsonl:2: invalid JSON"):
        read_jsonl(p)
    p.write_text("[1, 2]\n")
    with pytest.raises(UsageError, match=r"a.jsonl:1: expected a JSON object"):
        read_jsonl(p)
    with pytest.raises(UsageError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_json_and_lists(tmp_path):
    p = tmp_path / "b.json"
    p.write_text('{\n "a": [1,\n}')
    with pytest.raises(UsageError, match=r"b.json:3: invalid JSON"):
        read_json(p)
    p.write_text('{"a": 1}')
    with pytest.raises(UsageError, match="expected a JSON list of entries"):
        read_json_list(p)
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_json(p)


def test_csv_rows_and_dicts(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text('q,a,"multi\nline",x\nonly,two\n')
    with pytest.raises(UsageError, match=r"c.csv:3: expected 4 columns, got 2"):
        read_csv_rows(p, 4, header=False)
    p.write_text("text,label\nhi,1\n")
    assert read_csv_dicts(p, ("text", "label")) == [(2, {"text": "hi", "label": "1"})]
    with pytest.raises(UsageError, match="no column 'review'"):
        read_csv_dicts(p, ("review",))
