"""The scoring engine on tiny models: the packed forward against transformers', the planner's
packing, out-of-memory back-off, and prefixes packed many per forward."""

import numpy as np
import pytest

from helpers import MMLU
from lmboard.models.engine.batching import InjectedOOM, pack
from lmboard.models.engine.plan import PlanCounts, ScoreItem, plan_groups
from lmboard.models.engine.scoring import EngineSettings, score_all
from lmboard.tasks.exam import ExamSettings
from lmboard.tasks.exam_run import build_prompts, sample_key
from lmboard.tasks.mmlu import MMLU as MMLUTask


def real_items(lm, subjects=("anatomy", "astronomy"), shots=3, limit=12):
    task = MMLUTask()
    questions, pools = {}, {}
    for s in subjects:
        test = task.load_split(MMLU, s, "test")
        pools[s] = task.shot_pool(MMLU, s, test)
        questions[s] = test[:limit]
    prompts, ids = build_prompts(task, lm, ExamSettings("mmlu", MMLU, subjects, limit, shots), questions, pools)
    return [ScoreItem(sample_key(p.question), i, p.prefix) for p, i in zip(prompts, ids, strict=True)]


def collect(lm, items, targets, lse=False, oom_guard=None, **engine):
    return score_all(lm, items, targets, EngineSettings(recheck_margin=0.0, **engine), oom_guard=oom_guard, lse=lse)


def test_prefix_boundary_on_a_sentencepiece_tokenizer(tiny_sp):
    items = real_items(tiny_sp)
    counts = PlanCounts()
    groups = plan_groups(tiny_sp.encode, items, True, counts)
    assert sum(len(g.members) for g in groups) == len(items) and counts.fallbacks == 0
    for g in groups:
        for item, suffix in g.members:
            assert g.shared + suffix == item.ids and len(suffix) >= 1  # the ids run are the full prompt's


def test_a_prefix_that_does_not_tokenize_alike_falls_back(tiny_sp):
    tok = tiny_sp.tokenizer
    text = "The anatomy of the heart.\nAnswer:"
    items = [ScoreItem("a", tok(text).input_ids, "Completely different words here that are long enough")]
    stats = PlanCounts()
    groups = plan_groups(tiny_sp.encode, items, True, stats)
    assert stats.fallbacks == 1 and groups[0].shared == [] and groups[0].members[0][1] == items[0].ids


def test_pack_respects_the_budget_longest_first():
    lengths = [5, 50, 20, 20, 7, 100]
    batches = pack(lengths, budget=100)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert batches[0] == [5]
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 100 or len(b) == 1
    assert pack(lengths, 100) == pack(lengths, 100)  # deterministic


def _tiny_model(kind: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    common = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    if kind == "qwen2":  # q/k/v biases
        model = Qwen2ForCausalLM(Qwen2Config(**common, use_sliding_window=False))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common, rope_parameters={"rope_type": "default", "rope_theta": 500.0}))
    for p in model.parameters():  # random biases and norms, so that a dropped term shows
        torch.nn.init.normal_(p, std=0.2)
    return model.eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_packed_forward_equals_the_transformers_forward(kind):
    import torch

    from lmboard.models.engine.packed import PackedModel, Segment, supports

    model = _tiny_model(kind)
    assert supports(model, torch.device("cpu")) is None
    g = torch.Generator().manual_seed(0)
    pre = torch.randint(0, 300, (37,), generator=g).tolist()
    sufs = [torch.randint(0, 300, (n,), generator=g).tolist() for n in (1, 9, 23, 4)]
    with torch.inference_mode():
        ref = torch.stack([model(input_ids=torch.tensor([pre + s]), output_hidden_states=True).hidden_states[-1][0, -1]
                           for s in sufs])
        pm = PackedModel(model)
        kv = pm.forward([Segment(pre[:20])], kv_out=True)[1][0]
        kv = kv.extended(pm.forward([Segment(pre[20:], kv)], kv_out=True)[1][0])  # grown in two steps
        on_prefix = pm.forward([Segment(s, kv) for s in sufs])[0]
        # mixed: whole prompts, and the rest of the prompt on a sliced prefix, in one batch
        mixed = pm.forward([Segment(pre + sufs[0]), Segment(pre[11:] + sufs[1], kv.sliced(11)),
                            Segment(sufs[2], kv), Segment(pre[30:] + sufs[3], kv.sliced(30))])[0]
        after = model(input_ids=torch.tensor([pre + sufs[2]]), output_hidden_states=True).hidden_states[-1][0, -1]
    torch.testing.assert_close(on_prefix, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mixed, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(after, ref[2], atol=0, rtol=0)  # fused weights are views: the model is unchanged


def test_unsupported_architecture_runs_the_transformers_forward():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmboard.models.engine.packed import supports

    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2))
    assert supports(model, torch.device("cpu")) == "architecture gpt2"


def test_pack_segments_budget_order_and_prefix_runs():
    from lmboard.models.engine.plan import Segment, pack_segments

    segs = [Segment(ScoreItem(str(i), []), ref, [0] * n)
            for i, (ref, n) in enumerate([((0, 9), 30), ((0, 9), 30), ((1, 5), 50), ((0, 9), 10), (None, 70)])]
    packed = pack_segments(segs, 100, one_prefix=False)
    assert packed == [[0, 1], [2, 3], [4]] and packed == pack_segments(segs, 100, one_prefix=False)
    # a padding runner: one prefix per batch, count x longest within the budget
    assert pack_segments(segs, 100, one_prefix=True) == [[0, 1], [2], [3], [4]]


def test_a_batch_runs_on_at_most_max_caches_prefix_caches():
    """Label tokens on each review's own prompt cache: a few tokens each, so the token
    budget alone packed every review's cache into one batch (5.2 GB for 60 reviews)."""
    from lmboard.models.engine.plan import MAX_CACHES, Segment, pack_segments

    segs = [Segment(ScoreItem(str(i), []), (i // 2, 40), [0] * 3) for i in range(40)]
    packed = pack_segments(segs, 10_000, one_prefix=False)
    assert [i for b in packed for i in b] == list(range(40))
    assert all(len({segs[i].ref[0] for i in b}) <= MAX_CACHES for b in packed)
    assert len(packed) == 3


def test_out_of_memory_backs_off_and_gives_the_same_answers(tiny_sp):
    items = real_items(tiny_sp, limit=8)
    targets = [5, 6, 7, 8]
    ref, ref_stats = collect(tiny_sp, items, targets, batch_tokens=4096)
    limit = max(len(it.ids) for it in items)  # any one item fits; batches of them do not

    def guard(tokens):
        if tokens > limit:
            raise InjectedOOM(f"injected: {tokens} > {limit}")

    got, stats = collect(tiny_sp, items, targets, batch_tokens=4096, oom_guard=guard)
    assert stats.oom_backoffs > 0 and stats.batch_tokens < 4096
    assert ref_stats.oom_backoffs == 0
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-5)
    # a single item that cannot fit is an error, not an endless loop
    with pytest.raises(InjectedOOM):
        collect(tiny_sp, items[:1], targets, batch_tokens=4096, oom_guard=lambda t: guard(10**6))


def test_prefixes_run_packed_together_and_back_off(tiny_sp, monkeypatch):
    """One prefix per review (classification): the prompts' caches are computed many per
    forward, split on out-of-memory, and give what the full prompts give."""
    from lmboard.models.engine import kv, packed_runner

    calls = []
    for runner in (kv.HFRunner, packed_runner.PackedRunner):
        monkeypatch.setattr(runner, "prefixes", lambda self, reqs, orig=runner.prefixes:
                            (calls.append(len(reqs)), orig(self, reqs))[1])
    tok = tiny_sp.tokenizer
    texts = [f"Review {i}: the room was {'clean' if i % 2 else 'noisy'} and the staff " + "very " * (i % 5) + "kind."
             for i in range(12)]
    items = [ScoreItem(f"{i}.{j}", tok(t).input_ids + extra, t) for i, t in enumerate(texts) for j, extra in enumerate(([5], [6, 7]))]
    targets = [5, 6, 7, 8]
    ref, ref_stats = collect(tiny_sp, items, targets, lse=True, batch_tokens=4096)
    assert max(calls) > 1 and ref_stats.prefix_groups == len(texts) and ref_stats.oom_backoffs == 0
    limit = max(len(it.ids) for it in items)

    def guard(tokens):
        if tokens > limit:
            raise InjectedOOM(f"injected: {tokens} > {limit}")

    calls.clear()
    got, stats = collect(tiny_sp, items, targets, lse=True, batch_tokens=4096, oom_guard=guard)
    assert stats.oom_backoffs > 0 and max(calls) < len(texts)
    full, _ = collect(tiny_sp, items, targets, lse=True, batch_tokens=4096, prefix_reuse=False)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-5)
        np.testing.assert_allclose(full[k], ref[k], atol=1e-4)
