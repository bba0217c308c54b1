"""The scoring engine: exact token boundaries, invariance to batching and prefix reuse,
and the out-of-memory back-off."""

import numpy as np
import pytest

from conftest import MMLU
from lmboard.config import EngineSettings, ExamSettings
from lmboard.engine.batching import InjectedOOM, pack
from lmboard.engine.scoring import EngineStats, ScoreItem, plan_groups, score_last
from lmboard.store import Store
from lmboard.tasks.exam_run import build_prompts, run_exam, sample_key
from lmboard.tasks.mmlu import MMLU as MMLUTask


def real_items(lm, subjects=("anatomy", "astronomy"), shots=3, limit=12):
    task = MMLUTask()
    questions, pools = {}, {}
    for s in subjects:
        test = task.load_split(MMLU, s, "test")
        pools[s] = task.shot_pool(MMLU, s, test)
        questions[s] = test[:limit]
    settings = ExamSettings("mmlu", MMLU, subjects, limit, shots)
    prompts, ids = build_prompts(task, lm, settings, questions, pools)
    return [ScoreItem(sample_key(p.question), i, p.prefix) for p, i in zip(prompts, ids, strict=True)]


@pytest.mark.parametrize("which", ["smollm2_fp32", "tiny_sp"])
def test_prefix_boundary_gives_exactly_the_full_prompt_ids(which, request):
    lm = request.getfixturevalue(which)
    items = real_items(lm)
    stats = EngineStats()
    groups = plan_groups(lm, items, True, stats)
    seen = 0
    for g in groups:
        for item, suffix in g.members:
            assert g.shared + suffix == item.ids  # the ids run are the full prompt's
            assert len(suffix) >= 1
            seen += 1
    assert seen == len(items) and stats.fallbacks == 0
    # first_n with 3 shots: questions 0-2 each skip themselves; question 3 and later share rows 0-2
    assert len([g for g in groups if g.shared]) == 2 * 4


def test_bpe_merge_across_the_boundary_is_trimmed(smollm2_fp32):
    tok = smollm2_fp32.tokenizer
    prefix = "Answer: A\n\n"  # alone, "\n\n" is one token; before a word it splits
    text = prefix + "What is it?\nAnswer:"
    items = [ScoreItem("a", tok(text).input_ids, prefix)]
    stats = EngineStats()
    (g,) = plan_groups(smollm2_fp32, items, True, stats)
    assert tok(prefix).input_ids != tok(text).input_ids[: len(tok(prefix).input_ids)]
    assert stats.boundary_trimmed == 1 and g.shared + g.members[0][1] == items[0].ids


def test_a_prefix_that_does_not_tokenize_alike_falls_back(tiny_sp):
    tok = tiny_sp.tokenizer
    text = "The anatomy of the heart.\nAnswer:"
    items = [ScoreItem("a", tok(text).input_ids, "Completely different words here that are long enough")]
    stats = EngineStats()
    groups = plan_groups(tiny_sp, items, True, stats)
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

    from lmboard.engine.packed import PackedModel, Segment, supports

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

    from lmboard.engine.packed import supports

    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2))
    assert supports(model, torch.device("cpu")) == "architecture gpt2"


def _exam(lm, tmp_path, name, **engine):
    settings = ExamSettings("mmlu", MMLU, ("anatomy", "astronomy"), 12, 3, engine=EngineSettings(**engine))
    res = run_exam(MMLUTask(), lm, settings, Store(tmp_path / f"{name}.db"))
    keys = sorted(res.samples)
    return np.array([res.samples[k]["probs"] for k in keys]), [res.samples[k]["pred"] for k in keys], res


def test_invariant_to_batch_budget_and_prefix_reuse_in_float32(smollm2_fp32, tmp_path):
    base_p, base_pred, base = _exam(smollm2_fp32, tmp_path, "a", batch_tokens=4096)
    for name, kw in {"b": {"batch_tokens": 256}, "c": {"batch_tokens": 40},
                     "d": {"batch_tokens": 1024, "prefix_reuse": False},
                     "e": {"batch_tokens": 1024, "packed": False}}.items():
        p, pred, res = _exam(smollm2_fp32, tmp_path, name, **kw)
        assert pred == base_pred, name
        np.testing.assert_allclose(p, base_p, atol=1e-4)
        if name == "d":
            assert res.stats.prefix_tokens_reused == 0
    assert base.stats.prefix_tokens_reused > 0 and base.stats.forward == "packed" and base.stats.padded_tokens == 0
    assert res.stats.forward == "transformers" and res.stats.prefix_tokens_reused > 0


def test_pack_segments_budget_order_and_prefix_runs():
    from lmboard.engine.scoring import _Seg, pack_segments

    segs = [_Seg(ScoreItem(str(i), []), ref, [0] * n)
            for i, (ref, n) in enumerate([((0, 9), 30), ((0, 9), 30), ((1, 5), 50), ((0, 9), 10), (None, 70)])]
    packed = pack_segments(segs, 100, one_prefix=False)
    assert packed == [[0, 1], [2, 3], [4]] and packed == pack_segments(segs, 100, one_prefix=False)
    # a padding runner: one prefix per batch, count x longest within the budget
    assert pack_segments(segs, 100, one_prefix=True) == [[0, 1], [2], [3], [4]]


def test_out_of_memory_backs_off_and_gives_the_same_answers(tiny_sp):
    items = real_items(tiny_sp, limit=8)
    targets = [5, 6, 7, 8]

    def collect(**kw):
        got = {}
        stats = score_last(tiny_sp, items, targets, on_batch=lambda rows: got.update(rows), **kw)
        return got, stats

    ref, ref_stats = collect(batch_tokens=4096)
    limit = max(len(it.ids) for it in items)  # any one item fits; batches of them do not

    def guard(tokens):
        if tokens > limit:
            raise InjectedOOM(f"injected: {tokens} > {limit}")

    got, stats = collect(batch_tokens=4096, oom_guard=guard)
    assert stats.oom_backoffs > 0 and stats.batch_tokens < 4096
    assert ref_stats.oom_backoffs == 0
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-5)
    # a single item that cannot fit is an error, not an endless loop
    with pytest.raises(InjectedOOM):
        score_last(tiny_sp, items[:1], targets, batch_tokens=4096, oom_guard=lambda t: guard(10**6))


def test_prefixes_run_packed_together_and_back_off(tiny_sp, monkeypatch):
    """One prefix per review (classification): the prompts' caches are computed many per
    forward, split on out-of-memory, and give what the full prompts give."""
    from lmboard.engine import kv, packed

    calls = []
    for runner in (kv.HFRunner, packed.PackedRunner):
        monkeypatch.setattr(runner, "prefixes", lambda self, reqs, orig=runner.prefixes: (calls.append(len(reqs)), orig(self, reqs))[1])
    tok = tiny_sp.tokenizer
    texts = [f"Review {i}: the room was {'clean' if i % 2 else 'noisy'} and the staff " + "very " * (i % 5) + "kind."
             for i in range(12)]
    items = [ScoreItem(f"{i}.{j}", tok(t).input_ids + extra, t) for i, t in enumerate(texts) for j, extra in enumerate(([5], [6, 7]))]
    targets = [5, 6, 7, 8]

    def collect(**kw):
        got = {}
        stats = score_last(tiny_sp, items, targets, on_batch=lambda rows: got.update(rows), lse=True, **kw)
        return got, stats

    ref, ref_stats = collect(batch_tokens=4096)
    assert max(calls) > 1 and ref_stats.prefix_groups == len(texts) and ref_stats.oom_backoffs == 0
    limit = max(len(it.ids) for it in items)

    def guard(tokens):
        if tokens > limit:
            raise InjectedOOM(f"injected: {tokens} > {limit}")

    calls.clear()
    got, stats = collect(batch_tokens=4096, oom_guard=guard)
    assert stats.oom_backoffs > 0 and max(calls) < len(texts)
    full, _ = collect(batch_tokens=4096, prefix_reuse=False)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-5)
        np.testing.assert_allclose(full[k], ref[k], atol=1e-4)
