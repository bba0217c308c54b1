"""One SQLite database for every run: runs, samples (scored questions, generations),
judgments.

Crash safety: writes happen as work completes, each batch in one transaction (a kill
at any point leaves the store as it was before or after that batch); WAL journal, a
busy timeout for concurrent readers and writers, and a lock per run so that a second
process running the same command waits for the first and then finds its work done.
A file that is not an lmboard store (garbage, truncated, another program's database)
is a one-line error naming the path, before any work.

The schema is versioned with append-only migrations: never edit one, add the next.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmboard.errors import UsageError
from lmboard.faults import fault

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
    # 3: a sample is 'final' or 'pending' (stored, awaiting its float32 recheck); a run
    #    belongs to a family (same job, model and data, any settings), so a rerun with
    #    other settings can say which run it differs from and how.
    """
    ALTER TABLE samples ADD COLUMN state TEXT NOT NULL DEFAULT 'final';
    ALTER TABLE runs ADD COLUMN family TEXT;
    CREATE INDEX runs_family ON runs(family);
    """,
    # 4: a sample's note: the backend's record of how it made the result (opaque here,
    #    handed back to the backend on resume). 'pending' now means provisional: the
    #    backend decides it later. Samples stored before carried the float32 recheck's
    #    record in their data ("recheck": {bf16_logits, gap_error, calibration}): it
    #    becomes their note, as the hf backend writes it now.
    """
    ALTER TABLE samples ADD COLUMN note TEXT;
    UPDATE samples SET note = json_object('recheck', json(json_extract(data, '$.recheck')))
        WHERE json_type(data, '$.recheck') = 'object';
    """,
]
OUR_TABLES = {"runs", "samples", "judgments"}
SQLITE_MAGIC = b"SQLite format 3\x00"


def default_db_path() -> Path:
    env = os.environ.get("LMBOARD_DB")
    return Path(env) if env else Path.home() / ".lmboard" / "lmboard.db"


@dataclass(frozen=True)
class OpenedRun:
    resumed: bool  # the run existed: its stored samples count
    differs_from: str | None = None  # another run of the same family, when this one is new
    changed: tuple[str, ...] = ()  # the settings that differ from it


@dataclass(frozen=True)
class StoredSample:
    """A stored sample, as a resumed run sees it (``Store.stored``)."""

    final: bool
    data: dict | None  # loaded for provisional samples and those with a note
    note: dict | None


_OPEN: weakref.WeakSet = weakref.WeakSet()  # stores open in this process (close_all)


def close_all() -> None:
    """Close every store this process opened: SQLite folds the write-ahead log into the
    database file (the command line ends with this before its fast exit)."""
    for store in list(_OPEN):
        try:
            store.close()
        except sqlite3.ProgrammingError:  # opened on another thread: sqlite3 lets only that one close it
            pass


class Store:
    def __init__(self, path: Path | str | None = None, notify: Callable[[str], None] | None = None):
        """``notify`` receives the store's notes for the user (a resumed or new run, a wait)."""
        self.path = Path(path) if path else default_db_path()
        self.notify = notify
        self._check_file()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
            _OPEN.add(self)
        except OSError as e:
            raise UsageError(f"--db: cannot open {self.path} ({e.strerror or e})") from e
        except sqlite3.DatabaseError as e:
            raise self._not_ours(str(e)) from e

    def _open(self, attempts: int = 100) -> None:
        """Connect, switch to WAL and migrate. Two processes opening a new file at once can
        meet a lock upgrade that SQLite reports as "database is locked" at once, without
        waiting (its busy handler cannot break that deadlock): close and try again."""
        for attempt in range(attempts):
            self.conn = sqlite3.connect(self.path, timeout=30)
            try:
                self.conn.execute("PRAGMA busy_timeout = 30000")
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self._check_schema()
                self._migrate()
                return
            except sqlite3.OperationalError as e:
                self.conn.close()
                if "locked" not in str(e) or attempt == attempts - 1:
                    raise
                time.sleep(0.05 + 0.01 * attempt)

    def say(self, note: str | None) -> None:
        if note and self.notify is not None:
            self.notify(note)

    def _not_ours(self, why: str) -> UsageError:
        return UsageError(f"--db: {self.path} is not a usable lmboard store ({why}); pass --db with another path, "
                          f"or move the file away (sqlite3 {self.path} .recover > dump.sql keeps what can be read)")

    def _check_file(self) -> None:
        if self.path.is_dir():
            raise UsageError(f"--db: {self.path} is a folder, not a file")
        if self.path.is_file() and self.path.stat().st_size > 0:
            try:
                with open(self.path, "rb") as f:
                    head = f.read(16)
            except OSError as e:
                raise UsageError(f"--db: cannot read {self.path} ({e.strerror or e})") from e
            if head != SQLITE_MAGIC:
                raise self._not_ours("not a SQLite database")

    def _check_schema(self) -> None:
        """A truncated or damaged file, or another program's database, is refused."""
        result = self.conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise self._not_ours(f"damaged: {result}")
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        foreign = sorted(t for t in tables - OUR_TABLES if not t.startswith("sqlite_"))
        if foreign or (version == 0 and tables):
            raise self._not_ours(f"another program's database, with tables {', '.join(sorted(tables))}")

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise UsageError(f"--db: {self.path} was written by a newer lmboard (schema {version})")
        if version == len(MIGRATIONS):
            return
        # One transaction for all pending migrations, taken with the write lock first: a
        # kill leaves the schema before or after, and of several processes opening a new
        # store at once, one migrates while the others wait and then find it done.
        self.conn.isolation_level = None
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                version = self.conn.execute("PRAGMA user_version").fetchone()[0]
                for i in range(version, len(MIGRATIONS)):
                    for statement in filter(str.strip, MIGRATIONS[i].split(";")):
                        self.conn.execute(statement)
                    self.conn.execute(f"PRAGMA user_version = {i + 1}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        finally:
            self.conn.isolation_level = ""

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    # ---- runs
    def open_run(self, run_id: str, kind: str, model: str, config: dict, provenance: dict,
                 family: str | None = None) -> OpenedRun:
        """Create the run, or find it again. A new run says which run of its family (same
        job, model and data) it differs from, and in which settings."""
        now = time.time()
        with self.conn:
            if self.conn.execute("SELECT id FROM runs WHERE id = ?", (run_id,)).fetchone():
                self.conn.execute("UPDATE runs SET updated = ?, status = 'running', provenance = ? WHERE id = ?",
                                  (now, json.dumps(provenance), run_id))
                return OpenedRun(True)
            self.conn.execute("INSERT INTO runs (id, kind, model, created, updated, status, config, provenance, "
                              "summary, family) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, NULL, ?)",
                              (run_id, kind, model, now, now, json.dumps(config), json.dumps(provenance), family))
        if family is None:
            return OpenedRun(False)
        row = self.conn.execute("SELECT id, config FROM runs WHERE family = ? AND id != ? ORDER BY updated DESC LIMIT 1",
                                (family, run_id)).fetchone()
        if row is None:
            return OpenedRun(False)
        return OpenedRun(False, row[0], tuple(_changed(json.loads(row[1]), config)))

    def set_status(self, run_id: str, status: str) -> None:
        with self.conn:
            self.conn.execute("UPDATE runs SET status = ?, updated = ? WHERE id = ?", (status, time.time(), run_id))

    def finish_run(self, run_id: str, summary: dict, peak_memory: dict | None = None) -> None:
        """The run is done: its summary, and the process's peak memory into its provenance."""
        with self.conn:
            self.conn.execute(
                "UPDATE runs SET status = 'done', updated = ?, summary = ? WHERE id = ?",
                (time.time(), json.dumps(summary, default=float), run_id),
            )
            if peak_memory is not None:
                self.conn.execute("UPDATE runs SET provenance = json_set(coalesce(provenance, '{}'), '$.peak_memory', "
                                  "json(?)) WHERE id = ?", (json.dumps(peak_memory), run_id))

    def run(self, run_id: str) -> dict[str, Any] | None:
        cur = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
        row = cur.fetchone()
        return _run_dict(cur, row) if row else None

    def runs(self, kind: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT * FROM runs" + (" WHERE kind = ?" if kind else "") + " ORDER BY created"
        cur = self.conn.execute(q, (kind,) if kind else ())
        return [_run_dict(cur, r) for r in cur.fetchall()]

    @contextmanager
    def run_lock(self, run_id: str) -> Iterator[None]:
        """Hold the run: a second process on the same run waits here until the first is
        done (or dead: the lock goes with its process), then finds its work stored."""
        folder = self.path.with_name(self.path.name + ".locks")
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{run_id}.lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.say(f"waiting: run {run_id} is being computed by another lmboard process")
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- samples
    def add_samples(self, run_id: str, items: Iterable[tuple[str, dict] | tuple[str, dict, dict | None]],
                    state: str = "final") -> None:
        """One transaction per call: callers pass a batch as it completes. An item is
        (key, data) or (key, data, note); ``state``: final, or pending (provisional)."""
        now = time.time()
        rows = [(run_id, it[0], json.dumps(it[1]), now, state,
                 json.dumps(it[2]) if len(it) > 2 and it[2] is not None else None) for it in items]
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO samples (run_id, key, data, created, state, note) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            fault("store.write")

    def sample_keys(self, run_id: str, state: str | None = "final") -> set[str]:
        """Keys stored for the run (``state=None``: in any state)."""
        q = "SELECT key FROM samples WHERE run_id = ?" + (" AND state = ?" if state else "")
        return {r[0] for r in self.conn.execute(q, (run_id, state) if state else (run_id,))}

    def samples(self, run_id: str) -> Iterator[tuple[str, dict]]:
        for k, d in self.conn.execute("SELECT key, data FROM samples WHERE run_id = ?", (run_id,)):
            yield k, json.loads(d)

    def stored(self, run_id: str) -> dict[str, StoredSample]:
        """Every sample of the run with its state and note; the data of provisional ones
        (and of those with a note) only: what a resumed run hands back to its backend."""
        out = {}
        for k, state, note, data in self.conn.execute(
                "SELECT key, state, note, CASE WHEN state != 'final' OR note IS NOT NULL THEN data END "
                "FROM samples WHERE run_id = ?", (run_id,)):
            out[k] = StoredSample(state == "final", json.loads(data) if data else None, json.loads(note) if note else None)
        return out

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
            fault("store.write")

    def close(self) -> None:
        self.conn.close()
        _OPEN.discard(self)

    def __del__(self) -> None:
        # A dropped store closes its connection now: sqlite3's statement cache holds a
        # cycle back to the connection, which would otherwise wait for the cyclic
        # collector (never, before a fast exit: its write-ahead log left beside the file).
        # A store dropped on another thread than its own (the collector runs anywhere)
        # cannot close it: sqlite3 refuses, and the connection waits for the collector.
        conn = self.__dict__.get("conn")
        if conn is not None:
            try:
                conn.close()
            except sqlite3.ProgrammingError:
                pass


def _changed(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The keys (dotted) whose values differ between two run configs (not the run id an
    exam's config holds)."""
    out = []
    for k in sorted((set(old) | set(new)) - {"run"}):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def _run_dict(cur: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    d = dict(zip([c[0] for c in cur.description], row, strict=True))
    for k in ("config", "provenance", "summary"):
        if d.get(k):
            d[k] = json.loads(d[k])
    return d
