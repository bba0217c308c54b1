"""The native packed-attention kernel (scoring): exact against a float64 reference over
prefixes and causal segments, independent of the other rows in the batch, and the
packed forward with it scores as with torch's fused kernel."""

from __future__ import annotations

import pytest
import torch

from lmboard.models.engine import native

# any_width: the AVX2 build too, which the engine leaves off (not faster there) but must be exact
pytestmark = pytest.mark.skipif(native.packed_attention_kernel(any_width=True) is None,
                                reason=f"no native kernel: {native.packed_why_not(any_width=True)}")


def reference(q, k, v, lens, prefix_of, prefixes, scale):
    out, start = [], 0
    g = q.shape[1] // k.shape[1]
    for n, p in zip(lens, prefix_of, strict=True):
        kk, vv = k[start:start + n].transpose(0, 1), v[start:start + n].transpose(0, 1)  # (KH, n, D)
        plen = 0
        if p >= 0:
            plen = prefixes[p][0].shape[1]
            kk, vv = torch.cat([prefixes[p][0], kk], 1), torch.cat([prefixes[p][1], vv], 1)
        kk, vv = kk.double().repeat_interleave(g, 0), vv.double().repeat_interleave(g, 0)
        s = torch.einsum("thd,hkd->thk", q[start:start + n].double(), kk) * scale
        causal = torch.arange(plen + n)[None, :] <= (plen + torch.arange(n))[:, None]
        s = s.masked_fill(~causal[:, None, :], float("-inf"))
        out.append(torch.einsum("thk,hkd->thd", s.softmax(-1), vv))
        start += n
    return torch.cat(out)


@pytest.mark.parametrize("heads,kv_heads", [(9, 3), (4, 4), (8, 2)])
def test_kernel_matches_float64_and_ignores_other_rows(heads, kv_heads):
    torch.manual_seed(0)
    d = 64
    lens, prefix_of = [37, 1, 100, 64, 5, 17], [0, 0, -1, 1, 1, 0]
    prefixes = [(torch.randn(kv_heads, 300, d), torch.randn(kv_heads, 300, d)),
                (torch.randn(kv_heads, 33, d), torch.randn(kv_heads, 33, d))]
    t = sum(lens)
    q, k, v = torch.randn(t, heads, d), torch.randn(t, kv_heads, d), torch.randn(t, kv_heads, d)
    lay = native.PackedLayout(lens, prefix_of, heads // kv_heads, "cpu")
    got = native.packed_attention(q, k, v, lay, prefixes, d ** -0.5)
    assert (got.double() - reference(q, k, v, lens, prefix_of, prefixes, d ** -0.5)).abs().max() < 1e-5
    # the third segment alone: the same numbers, bit for bit
    sl = slice(38, 138)
    alone = native.packed_attention(q[sl], k[sl], v[sl], native.PackedLayout([100], [-1], heads // kv_heads, "cpu"),
                                    [], d ** -0.5)
    assert torch.equal(alone, got[sl])


def test_packed_forward_scores_as_with_torchs_kernel(tiny_sp, monkeypatch):
    from lmboard.models.engine.packed import PackedModel, Segment

    real = native.packed_attention_kernel
    monkeypatch.setattr(native, "packed_attention_kernel", lambda any_width=False: real(any_width=True))
    pm = PackedModel(tiny_sp.model, dtype=torch.float32)
    assert pm._native_ok()  # the kernel runs in the first forward below
    base = [5, 9, 2, 7, 11, 3, 8] * 6
    pre = pm.forward([Segment(base)], kv_out=True)[1][0]
    segs = [Segment([4, 6, 1], pre), Segment([3] * 9, pre), Segment([2, 8, 5, 5, 1])]
    with torch.inference_mode():
        h_native, _ = pm.forward(segs)
        monkeypatch.setattr(native, "packed_applies", lambda *a: False)
        h_torch, _ = pm.forward(segs)
    assert (h_native - h_torch).abs().max() < 1e-4
