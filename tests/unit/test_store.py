"""The store: concurrent creation, upgrades of older stores, sample states, run families."""

import multiprocessing as mp
import sqlite3

from lmboard.store import MIGRATIONS, Store


def _open(path: str) -> int:
    return Store(path).schema_version


def test_processes_creating_one_store_at_once_all_get_it(tmp_path):
    path = str(tmp_path / "s.db")
    with mp.get_context("spawn").Pool(4) as pool:
        assert pool.map(_open, [path] * 4) == [len(MIGRATIONS)] * 4


def test_an_older_store_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(MIGRATIONS[0] + MIGRATIONS[1] + "PRAGMA user_version = 2;")
    con.execute("INSERT INTO runs VALUES ('r', 'exam', 'm', 0, 0, 'done', '{}', '{}', NULL)")
    con.execute("INSERT INTO samples VALUES ('r', 'k', '{\"x\": 1}', 0)")
    con.commit()
    con.close()
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.sample_keys("r") == {"k"} and dict(store.samples("r")) == {"k": {"x": 1}}  # kept, and final


def test_pending_samples_and_run_families(tmp_path):
    notes = []
    store = Store(tmp_path / "s.db", notify=notes.append)
    assert not store.open_run("a", "exam", "m", {"dtype": "float32", "shots": 5}, {}, family="f").resumed
    store.add_samples("a", [("1", {"v": 1})], state="pending")
    store.add_samples("a", [("2", {"v": 2})])
    assert store.sample_keys("a") == {"2"} and store.sample_keys("a", "pending") == {"1"}
    assert store.sample_keys("a", None) == {"1", "2"}
    store.add_samples("a", [("1", {"v": 3})])  # the recheck replaces the pending row
    assert store.sample_keys("a") == {"1", "2"} and dict(store.samples("a"))["1"] == {"v": 3}
    opened = store.open_run("b", "exam", "m", {"dtype": "bfloat16", "shots": 5}, {}, family="f")
    assert (opened.resumed, opened.differs_from, opened.changed) == (False, "a", ("dtype",))
    assert store.open_run("a", "exam", "m", {}, {}, family="f").resumed
    # an exam's config holds its own run id: never named as a difference
    store.open_run("c", "exam", "m", {"shots": 5, "run": "c"}, {}, family="g")
    assert store.open_run("d", "exam", "m", {"shots": 0, "run": "d"}, {}, family="g").changed == ("shots",)
    with store.run_lock("a"):
        pass


def test_two_processes_opening_a_new_store_at_once(tmp_path):
    """Both open it: SQLite reports the WAL switch's lock deadlock as "database is locked"
    without waiting, and the store retries instead of calling the file unusable."""
    import subprocess
    import sys

    code = "import sys; from lmboard.store import Store; Store(sys.argv[1])"
    for i in range(12):
        db = tmp_path / f"db{i}"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        errs = [p.communicate(timeout=120)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errs


def test_a_store_dropped_on_another_thread_is_quiet(tmp_path):
    """A store opened on one thread and dropped on another (the collector runs anywhere):
    sqlite3 refuses to close it there, and nothing is raised or printed."""
    import gc
    import sys
    import threading

    from lmboard.store import Store, close_all

    box: list = []
    t = threading.Thread(target=lambda: box.append(Store(tmp_path / "t.db")))
    t.start()
    t.join()
    seen: list = []
    old, sys.unraisablehook = sys.unraisablehook, seen.append
    try:
        close_all()  # the command line's exit path: skips it
        box.clear()
        gc.collect()
    finally:
        sys.unraisablehook = old
    assert seen == []
