"""MMLU prompts and few-shot rules against the seed's code."""

import pandas as pd
import pytest

from helpers import MMLU
from lmboard.tasks.mmlu import MMLU as MMLUTask
from lmboard.tasks.mmlu import format_subject
from seed_mmlu import make_dev_layout, seed_format_example, seed_format_subject, seed_gen_prompt


@pytest.fixture(scope="module")
def dev_layout(tmp_path_factory):
    return make_dev_layout(tmp_path_factory.mktemp("mmlu_dev"))


def test_format_subject_keeps_the_original_double_space():
    assert format_subject("abstract_algebra") == seed_format_subject("abstract_algebra") == " abstract algebra"
    assert "about  abstract algebra." in MMLUTask().header("abstract_algebra")


def test_prompts_equal_the_seed_code(dev_layout):
    task = MMLUTask()
    dev_df = pd.read_csv(dev_layout / "dev" / "anatomy_dev.csv", header=None)
    test_df = pd.read_csv(dev_layout / "test" / "anatomy_test.csv", header=None)
    test = task.load_split(dev_layout, "anatomy", "test")
    pool, source = task.shot_pool(dev_layout, "anatomy", test)
    assert source == "dev"
    for k in (0, 1, 5):
        for i in range(len(test)):
            text, prefix = task.render(test[i], task.shots_for(test[i], pool, source, k))
            assert text == seed_gen_prompt(dev_df, "anatomy", k) + seed_format_example(test_df, i, False)
            assert prefix == seed_gen_prompt(dev_df, "anatomy", k)


def test_shots_from_test_split_follow_first_n():
    task = MMLUTask()
    test = task.load_split(MMLU, "anatomy", "test")
    assert task.shot_pool(MMLU, "anatomy", test)[1] == "test"
    idx = lambda qs: [q.index for q in qs]  # noqa: E731
    assert idx(task.shots_for(test[2], test, "test", 5)) == [0, 1, 3, 4, 5]
    assert idx(task.shots_for(test[5], test, "test", 5)) == [0, 1, 2, 3, 4]
    assert idx(task.shots_for(test[50], test, "test", 5)) == [0, 1, 2, 3, 4]


def test_too_long_prompts_drop_the_last_shot_first():
    task = MMLUTask()
    test = task.load_split(MMLU, "anatomy", "test")
    shots = task.shots_for(test[10], test, "test", 5)
    count = lambda text: len(text.split())  # noqa: E731
    full = count(task.render(test[10], shots)[0])
    p = task.build_prompt(test[10], shots, count, full - 1)
    assert p.shots < 5
    assert p.text == task.render(test[10], shots[: p.shots])[0]  # the first ones are kept
    assert count(p.text) <= full - 1


