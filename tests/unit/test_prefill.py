"""Prefill without padding (engine/prefill.py): each row's cache is what it has alone, the
shared start is computed once, and generation from the padded cache answers as an
unpadded single-row run does."""

import torch

from helpers import generate
from lmboard.lm import GenerationSettings, GenRequest
from lmboard.models.engine import generation as G
from lmboard.models.engine.kv import prefix_kv
from lmboard.models.engine.prefill import common_start, padded_cache


def test_common_start_leaves_each_row_its_last_token():
    assert common_start([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert common_start([[1, 2], [1, 2, 3]]) == 1
    assert common_start([[7, 8, 9]]) == 2
    assert common_start([[1, 2], [3, 4]]) == 0


def test_padded_cache_holds_each_rows_own_cache(tiny_sp):
    rows = [tiny_sp.encode("Answer: the anatomy of the heart and its parts"), tiny_sp.encode("Answer: A"),
            tiny_sp.encode("Answer: the astronomy of stars")]
    with torch.inference_mode():
        cache, shared = padded_cache(tiny_sp, rows)
        width = max(len(r) for r in rows) - 1
        assert shared == common_start(rows) > 0
        for i, r in enumerate(rows):
            alone = prefix_kv(tiny_sp, r[:-1])
            for layer, (k, v) in zip(cache.layers, alone, strict=True):
                assert k.shape[2] == len(r) - 1
                torch.testing.assert_close(layer.keys[i, :, width - k.shape[2]:], k[0], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(layer.values[i, :, width - v.shape[2]:], v[0], atol=1e-5, rtol=1e-5)
                assert not layer.keys[i, :, : width - k.shape[2]].any()  # pad slots hold nothing


def test_generation_from_the_padded_cache_answers_as_one_row_alone(tiny_sp, monkeypatch):
    texts = ["Which planet is largest? Answer:", "Name a bone. Answer:", "Which of these is a star in the sky? Answer:"]
    reqs = [GenRequest(str(i), text=t) for i, t in enumerate(texts)]
    s = GenerationSettings(max_new_tokens=12, do_sample=False, raw=True, ignore_eos=True)
    batched = {r.key: r.output for r in generate(tiny_sp, reqs, s, scheduler="static")}
    alone = {r.key: r.output for q in reqs for r in generate(tiny_sp, [q], s, scheduler="static")}
    assert batched == alone
    monkeypatch.setattr(G, "unpadded_applies", lambda *a: False)  # the padded prefill, for comparison
    assert {r.key: r.output for r in generate(tiny_sp, reqs, s, scheduler="static")} == alone
