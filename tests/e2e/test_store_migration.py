"""A store written before the runtime moved behind the LM protocol (schema 3:
tests/fixtures/store_v3.db, made by tests/fixtures/make_store_v3.sh with that code): a
bfloat16 exam killed during its float32 recheck, and two finished runs. Opened now, it
migrates (schema 4: the recheck's record becomes each rescored row's note), the killed
exam resumes under the same run id, and every run shows on the board."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from helpers import DATA, MMLU, run_cli
from lmboard.job import run_id
from lmboard.models.aliases import smollm2_dir
from lmboard.store import Store

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store_v3.db"
KILLED = ["eval", "smollm2,dtype=bfloat16", "--task", "mmlu", "--data", str(MMLU), "--subjects", "anatomy,astronomy",
          "--limit", "30", "--shots", "0", "--batch-tokens", "300"]


def relocate(db: Path) -> dict[str, str]:
    """The fixture as if made on this machine: its machine's paths (the model's folder,
    the data's) replaced by this one's, and each run id recomputed from its stored key
    (an id is the key's hash). Returns old id -> new id."""
    meta = json.loads(FIXTURE.with_suffix(".json").read_text())
    paths = {meta["model_dir"]: smollm2_dir(), meta["data_dir"]: str(DATA.resolve())}
    conn = sqlite3.connect(db)
    moved = {}
    with conn:
        for rid, config in conn.execute("SELECT id, config FROM runs").fetchall():
            for old, new in paths.items():
                config = config.replace(old, new)
            cfg = json.loads(config)
            new_id = run_id(rid.rsplit("-", 1)[0], {k: v for k, v in cfg.items() if k != "run"})
            if "run" in cfg:
                cfg["run"] = new_id
            conn.execute("UPDATE runs SET id = ?, config = ? WHERE id = ?", (new_id, json.dumps(cfg), rid))
            conn.execute("UPDATE samples SET run_id = ? WHERE run_id = ?", (new_id, rid))
            moved[rid] = new_id
    conn.close()
    return moved


def test_a_schema_3_store_migrates_resumes_its_killed_run_and_shows_on_the_board(tmp_path):
    db = tmp_path / "store.db"
    shutil.copy(FIXTURE, db)
    moved = relocate(db)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    killed = next(new for new in moved.values() if conn.execute(
        "SELECT status FROM runs WHERE id = ?", (new,)).fetchone()[0] == "running")
    before = {k: (state, json.loads(d)) for k, state, d in conn.execute(
        "SELECT key, state, data FROM samples WHERE run_id = ?", (killed,))}
    conn.close()
    states = [s for s, _ in before.values()]
    assert states.count("pending") > 0 and 0 < states.count("final") < 60 and len(before) < 60

    store = Store(db)  # opening migrates
    assert store.schema_version == 4
    stored = store.stored(killed)
    rescored = {k for k, (_, d) in before.items() if isinstance(d.get("recheck"), dict)}
    assert rescored and {k for k, s in stored.items() if s.note} == rescored
    assert all(stored[k].note == {"recheck": before[k][1]["recheck"]} for k in rescored)
    store.close()

    r = run_cli(*KILLED, "--db", str(db), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    # the same id (the new code computes the old key), and what it kept
    assert f"resuming run {killed}: {states.count('final')} of 60 stored, {states.count('pending')} provisional" in r.stderr
    store = Store(db)
    stored, data = store.stored(killed), dict(store.samples(killed))
    after = {k: (stored[k].final, d) for k, d in data.items()}
    assert len(after) == 60 and all(final for final, _ in after.values())
    for k, (state, data) in before.items():
        if state == "final":
            assert after[k][1] == data  # what was final is kept as it was
        elif after[k][1]["logits"] != data["logits"]:
            assert "recheck" in after[k][1]  # a provisional row only moves when the recheck rescored it
    assert store.run(killed)["status"] == "done"

    board = run_cli("board", "--db", str(db), "--format", "json")
    assert board.returncode == 0, board.stderr
    shown = json.loads(board.stdout)
    # the resumed exam; the old finished exam and classification (float32: scoring labels)
    assert {m["key"] for m in shown["models"]} == {"smollm2 · bfloat16", "smollm2 · float32"}
    runs = {c["run"] for c in _cells(shown)}
    assert set(moved.values()) <= runs, (moved, runs)


def _cells(board: dict) -> list[dict]:
    """Every cell of the board's JSON, wherever it sits."""
    found = []

    def walk(x):
        if isinstance(x, dict):
            if "run" in x and "value" in x:
                found.append(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(board)
    return found
