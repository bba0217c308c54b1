"""The fused elementwise kernels of a bfloat16 forward (engine/native/elementwise.c):
each against torch's separate passes, and the packed forward with them against the
same forward on torch's passes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmboard.models.engine import native
from lmboard.models.engine.packed import _rotate_half  # the float32 passes the kernel replaces

pytestmark = pytest.mark.skipif(native.elementwise_kernels() is None,
                                reason=f"no fused kernels: {native.elementwise_why_not()}")


def test_rotary_is_torchs_exactly():
    torch.manual_seed(0)
    t, h, kh, d = 37, 9, 3, 64
    qkv = (torch.randn(t, (h + 2 * kh) * d) * 3).bfloat16()
    cos, sin = torch.randn(t, d), torch.randn(t, d)
    q, k, v = native.qkv_rotary(qkv, cos, sin, h, kh, d)
    qk = qkv.float()[:, : (h + kh) * d].view(t, h + kh, d)
    qk = qk * cos[:, None] + _rotate_half(qk) * sin[:, None]
    assert torch.equal(q, qk[:, :h]) and torch.equal(k, qk[:, h:])
    assert torch.equal(v, qkv.float()[:, (h + kh) * d:].view(t, kh, d))


@pytest.mark.parametrize("width", [576, 100])  # a multiple of 16, and one with a scalar tail
def test_rms_norm_rounds_torchs_float32_norm(width):
    torch.manual_seed(1)
    x, w = torch.randn(50, width) * 4, torch.rand(width) + 0.5
    ours = native.rms_norm_bf16(x, w, 1e-5)
    exact = F.rms_norm(x.double(), (width,), w.double(), 1e-5)
    assert ours.dtype == torch.bfloat16
    # one rounding of the float32 norm: within half a bfloat16 unit, plus float32's few ulps
    ulp = 2.0 ** (torch.frexp(exact.float())[1].double() - 8)
    assert ((ours.double() - exact).abs() <= ulp * 0.5 + exact.abs() * 1e-6).all()
    assert (ours != F.rms_norm(x, (width,), w, 1e-5).bfloat16()).float().mean() < 1e-3


def test_silu_product_rounds_once():
    torch.manual_seed(2)
    inter = 72  # 4 vectors and a scalar tail
    gu = (torch.randn(40, 2 * inter) * 3).bfloat16()
    gu[0, :8] = torch.tensor([0.0, -0.0, 80.0, -80.0, 1e-3, -1e-3, 5.0, -5.0])
    ours = native.silu_mul_bf16(gu, inter)
    exact = F.silu(gu[:, :inter].double()) * gu[:, inter:].double()
    ulp = 2.0 ** (torch.frexp(exact.float())[1].double() - 8)
    assert ((ours.double() - exact).abs() <= ulp * 0.5 + exact.abs() * 1e-6).all()
    torch_two_roundings = F.silu(gu[:, :inter]) * gu[:, inter:]
    assert (ours.double() - exact).abs().sum() < (torch_two_roundings.double() - exact).abs().sum()


def test_packed_forward_with_them_is_close_to_torchs_passes(sp_model_dir):
    from lmboard.models.engine.packed import PackedModel, Segment
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    pm = PackedModel(load_model(parse_model_spec(f"hf:{sp_model_dir},dtype=bfloat16")).model)
    assert pm.fused
    base = [5, 9, 2, 7, 11, 3, 8] * 6
    with torch.inference_mode():
        pre = pm.forward([Segment(base)], kv_out=True)[1][0]
        segs = [Segment([4, 6, 1], pre), Segment([3] * 9, pre), Segment([2, 8, 5, 5, 1])]
        fused, _ = pm.forward(segs)
        pm.fused = False
        passes, _ = pm.forward(segs)
    assert not torch.equal(fused, passes)  # the kernels ran
    assert (fused - passes).abs().max() < 0.05 * passes.abs().max()
