"""The native decode-attention kernel: exact against a float64 reference (bfloat16 and
float32 caches), independent of batch-mates, and the decoder's answers with it match
torch's kernel."""

from __future__ import annotations

import pytest
import torch

from helpers import generate
from lmboard.lm import GenerationSettings, GenRequest
from lmboard.models.engine import native

pytestmark = pytest.mark.skipif(native.decode_attention_kernel() is None, reason=f"no native kernel: {native.why_not()}")


def reference(q, k, v, lens, scale):
    out = []
    groups = q.shape[1] // k.shape[1]
    for b in range(q.shape[0]):
        n = int(lens[b])
        kk = k[b, :, :n].double().repeat_interleave(groups, 0)
        vv = v[b, :, :n].double().repeat_interleave(groups, 0)
        p = ((q[b].double()[:, None, :] * kk).sum(-1) * scale).softmax(-1)
        out.append((p[:, :, None] * vv).sum(1))
    return torch.stack(out)


@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, torch.float32])
def test_kernel_matches_float64_and_ignores_batch_mates(cache_dtype):
    torch.manual_seed(0)
    k = torch.randn(6, 3, 40, 64).to(cache_dtype)
    v = torch.randn_like(k)
    q = torch.randn(5, 9, 64)
    lens = torch.tensor([1, 7, 40, 23, 12])
    got = native.decode_attention(q, k, v, lens, 0.125)
    assert (got.double() - reference(q, k, v, lens, 0.125)).abs().max() < 1e-5
    assert torch.equal(native.decode_attention(q[2:4], k[2:], v[2:], lens[2:4], 0.125), got[2:4])
    k2 = k.clone()
    k2[1, :, 7:] = 99  # positions beyond a sequence's length are never read
    assert torch.equal(native.decode_attention(q, k2, v, lens, 0.125)[1], got[1])
    # nor is stale memory (the slot cache is left unwritten for this kernel): NaN there
    v2 = v.clone()
    k2[:, :, 1:] = float("nan")
    v2[:, :, 1:] = float("nan")
    assert torch.equal(native.decode_attention(q[:1], k2, v2, lens[:1], 0.125), got[:1])


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_decoder_with_the_kernel_answers_as_with_torchs(sp_model_dir, monkeypatch, dtype):
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    lm = load_model(parse_model_spec(f"hf:{sp_model_dir},dtype={dtype}"))
    reqs = [GenRequest(f"p{i}", text="the room was clean " * (1 + i % 4) + str(i)) for i in range(6)]
    s = GenerationSettings(max_new_tokens=10, do_sample=False, raw=True, ignore_eos=True)
    with_kernel = {r.key: r.output for r in generate(lm, reqs, s, batch_size=4)}
    monkeypatch.setattr(native, "applies", lambda *a: False)
    with_torch = {r.key: r.output for r in generate(lm, reqs, s, batch_size=4)}
    same = sum(with_kernel[k] == with_torch[k] for k in with_torch)
    # bfloat16: torch's kernel takes bfloat16 queries, so a near tie may flip; float32: the same answers
    assert same >= len(reqs) - (dtype == "bfloat16"), (with_kernel, with_torch)
