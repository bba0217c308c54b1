"""Sharding for data-parallel runs: deterministic, every item once, balanced by tokens,
small groups kept whole, a large group cut into consecutive pieces."""

from lmboard.parallel import shard, sharding_note


def test_every_item_once_balanced_and_deterministic():
    weights = [(i * 37) % 11 + 5 for i in range(200)]
    groups = [f"s{i // 10}" for i in range(200)]  # 20 subjects of 10 questions
    a = shard(weights, groups, 3)
    assert sorted(i for s in a for i in s.items) == list(range(200))
    assert a == shard(weights, groups, 3)
    tokens = [s.tokens for s in a]
    assert max(tokens) - min(tokens) <= max(weights) * 10  # within one group's tokens
    for s in a:  # a subject stays on one rank
        subjects = {groups[i] for i in s.items}
        assert all(sum(groups[i] == g for i in s.items) == 10 for g in subjects)
    assert sharding_note(a)["items_per_rank"] == [len(s.items) for s in a]


def test_a_large_group_is_cut_in_consecutive_pieces():
    weights = [10] * 100
    a = shard(weights, ["one"] * 100, 2)
    assert sum(len(s.items) for s in a) == 100 and abs(len(a[0].items) - len(a[1].items)) <= 100 // 8
    for s in a:  # pieces of consecutive questions (each piece computes the prefix once)
        runs = sum(1 for x, y in zip(s.items, s.items[1:], strict=False) if y != x + 1) + 1
        assert runs <= 5  # 9 pieces of at most 12 questions (a quarter of a share), about half each


def test_one_rank_holds_everything():
    assert shard([3, 1, 2], ["a", "b", "a"], 1)[0].items == [0, 1, 2]


def test_rank_0_stopped_mid_job_stores_what_other_ranks_sent(tmp_path):
    """torchrun stops rank 0 (RankFailed from its SIGTERM handler) once another rank died,
    maybe in the middle of rank 0's own batch: the rows that rank had already sent, and
    rank 0 had received but not yet handled, are stored on the way out."""
    import queue
    from types import SimpleNamespace

    import pytest

    from lmboard.job import Identity, JobRun
    from lmboard.parallel import RankFailed
    from lmboard.store import Store

    store = Store(tmp_path / "db")
    ident = Identity("exam-x", "exam", "m", {"k": 1})
    store.open_run(ident.run_id, ident.kind, ident.model, ident.key, {})
    run = JobRun(store, ident, {}, 4)
    inbox = queue.Queue()
    inbox.put((1, "rows", ("final", [("a/1", {"pred": "A"}), ("a/2", {"pred": "B"})])))
    inbox.put((1, "progress", 2))
    run.w = SimpleNamespace(parallel=True, main=True, relay=SimpleNamespace(inbox=inbox))
    with pytest.raises(RankFailed):
        with run:  # a world of one process underneath: the relay is the stand-in above
            raise RankFailed("rank 1: stopped")
    assert set(store.sample_keys(ident.run_id)) == {"a/1", "a/2"}
