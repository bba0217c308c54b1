"""One SQLite database for every run: runs, samples (scored questions, generations),
judgments. Writes happen as work completes, so a killed run loses at most the batch
in flight, and the same command resumes it.

The schema is versioned with append-only migrations: never edit one, add the next.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lmboard.errors import UsageError

MIGRATIONS: list[str] = [
    # 1: runs and their samples, keyed by a run id that hashes everything that
    #    changes the numbers (so the same command finds its own run again).
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        model TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        status TEXT NOT NULL,
        config TEXT NOT NULL,
        provenance TEXT,
        summary TEXT
    );
    CREATE TABLE samples (
        run_id TEXT NOT NULL REFERENCES runs(id),
        key TEXT NOT NULL,
        data TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (run_id, key)
    );
    """,
    # 2: judgments, cached by what determines them (judge, template, texts, order).
    """
    CREATE TABLE judgments (
        cache_key TEXT PRIMARY KEY,
        judge TEXT NOT NULL,
        data TEXT NOT NULL,
        created REAL NOT NULL
    );
    """,
]


def default_db_path() -> Path:
    env = os.environ.get("LMBOARD_DB")
    return Path(env) if env else Path.home() / ".lmboard" / "lmboard.db"


class Store:
    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else default_db_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=30)
        except (OSError, sqlite3.Error) as e:
            raise UsageError(f"--db: cannot open {self.path} ({e})") from e
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise UsageError(f"--db: {self.path} was written by a newer lmboard (schema {version})")
        for i in range(version, len(MIGRATIONS)):
            with self.conn:
                self.conn.executescript(MIGRATIONS[i])
                self.conn.execute(f"PRAGMA user_version = {i + 1}")

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    # ---- runs
    def open_run(self, run_id: str, kind: str, model: str, config: dict, provenance: dict) -> bool:
        """Create the run, or find it again. Returns True when it already existed."""
        now = time.time()
        row = self.conn.execute("SELECT id FROM runs WHERE id = ?", (run_id,)).fetchone()
        with self.conn:
            if row:
                self.conn.execute(
                    "UPDATE runs SET updated = ?, status = 'running', provenance = ? WHERE id = ?",
                    (now, json.dumps(provenance), run_id),
                )
                return True
            self.conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, 'running', ?, ?, NULL)",
                (run_id, kind, model, now, now, json.dumps(config), json.dumps(provenance)),
            )
        return False

    def finish_run(self, run_id: str, summary: dict) -> None:
        with self.conn:
            self.conn.execute(
                "UPDATE runs SET status = 'done', updated = ?, summary = ? WHERE id = ?",
                (time.time(), json.dumps(summary, default=float), run_id),
            )

    def run(self, run_id: str) -> dict[str, Any] | None:
        cur = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
        row = cur.fetchone()
        return _run_dict(cur, row) if row else None

    def runs(self, kind: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT * FROM runs" + (" WHERE kind = ?" if kind else "") + " ORDER BY created"
        cur = self.conn.execute(q, (kind,) if kind else ())
        return [_run_dict(cur, r) for r in cur.fetchall()]

    # ---- samples
    def add_samples(self, run_id: str, items: Iterable[tuple[str, dict]]) -> None:
        """One transaction per call: callers pass a batch as it completes."""
        now = time.time()
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)",
                [(run_id, k, json.dumps(d), now) for k, d in items],
            )

    def sample_keys(self, run_id: str) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT key FROM samples WHERE run_id = ?", (run_id,))}

    def samples(self, run_id: str) -> Iterator[tuple[str, dict]]:
        for k, d in self.conn.execute("SELECT key, data FROM samples WHERE run_id = ?", (run_id,)):
            yield k, json.loads(d)

    # ---- judgments
    def get_judgment(self, cache_key: str) -> dict | None:
        row = self.conn.execute("SELECT data FROM judgments WHERE cache_key = ?", (cache_key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_judgments(self, items: Iterable[tuple[str, str, dict]]) -> None:
        now = time.time()
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO judgments VALUES (?, ?, ?, ?)",
                [(k, judge, json.dumps(d), now) for k, judge, d in items],
            )

    def close(self) -> None:
        self.conn.close()


def _run_dict(cur: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    d = dict(zip([c[0] for c in cur.description], row, strict=True))
    for k in ("config", "provenance", "summary"):
        if d.get(k):
            d[k] = json.loads(d[k])
    return d
