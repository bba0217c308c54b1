"""Reading the user's files: JSON, JSONL and CSV, with errors that name the file and line.

Every reader raises ``UsageError`` with ``path:line: what is wrong`` (or ``path: entry N``
for a JSON list), so a malformed row is one line on the terminal, never a traceback.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from lmboard.errors import UsageError


def need_file(path: Path, flag: str | None = None) -> None:
    """A one-line error unless ``path`` is a file: a folder is named as one."""
    where = f"{flag}: {path}" if flag else str(path)
    if Path(path).is_dir():
        raise UsageError(f"{where}: is a folder, not a file")
    if not Path(path).is_file():
        raise UsageError(f"{where}: no such file")


def _text(path: Path, encoding: str = "utf-8") -> str:
    need_file(path)
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text ({e.reason})") from e


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e


def read_json_list(path: Path, what: str = "entries") -> list:
    data = read_json(path)
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected a JSON list of {what}")
    return data


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line."""
    path = Path(path)
    out = []
    for n, line in enumerate(_text(path).split("\n"), 1):  # not splitlines: U+2028 may sit in a string
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{n}: invalid JSON ({e.msg})") from e
        if not isinstance(obj, dict):
            raise UsageError(f"{path}:{n}: expected a JSON object")
        out.append((n, obj))
    return out


def read_csv_rows(path: Path, ncols: int, header: bool) -> list[tuple[int, list[str]]]:
    """(line number, row) pairs; a row with the wrong column count is a one-line error."""
    path = Path(path)
    out = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            start = reader.line_num + 1
            for i, row in enumerate(reader):
                line, start = start, reader.line_num + 1
                if (header and i == 0) or not row:
                    continue
                if len(row) != ncols:
                    raise UsageError(f"{path}:{line}: expected {ncols} columns, got {len(row)}")
                out.append((line, row))
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text ({e.reason})") from e
    return out


def read_csv_dicts(path: Path, required: tuple[str, ...] = ()) -> list[tuple[int, dict[str, str]]]:
    """(line number, row as a dict) of a CSV with a header; ``required`` columns must exist."""
    path = Path(path)
    need_file(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            names = reader.fieldnames or []
            for col in required:
                if col not in names:
                    raise UsageError(f"{path}: no column {col!r} (columns: {', '.join(names)})")
            return [(reader.line_num, r) for r in reader]
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text ({e.reason})") from e
