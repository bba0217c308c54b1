"""A packed forward for Llama-family decoders: many short segments, no padding.

Scoring runs many short segments (each question's own tokens) on top of shared prefix
caches (a subject's header and shots). The transformers forward pads them into a
rectangle (a quarter of the tokens of MMLU 5-shot were padding), builds masks and cache
objects per call, and runs q/k/v and gate/up as separate matmuls. Here every segment's
tokens are stacked into one (tokens, hidden) matrix:

- the linear layers run on real tokens only; q/k/v and gate/up each run as one matmul
  (the modules' weights become views of the fused matrices: no extra memory, and the
  transformers forward still works on the same model);
- attention splits in two exact parts merged by their log-sum-exps: the queries of the
  segments on one prefix cache, stacked, against that cache (one unmasked fused kernel,
  the cache never copied per segment), and each segment against its own tokens (causal,
  right-padded into a small rectangle, which needs no mask);
- the residual stream stays in float32 whatever the weights' dtype: only the inputs of
  the matmuls and of attention are cast. With bfloat16 weights this keeps the hidden
  state's rounding out of close answers.

Supported: llama, mistral without a sliding window, qwen2 (q/k/v biases), with SiLU
MLPs and unquantized weights. Other models run the transformers forward.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmboard.models.engine import native
from lmboard.models.engine.arch import has_sliding_window, text_config

SUPPORTED = ("llama", "mistral", "qwen2")
_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (PackedModel or None, why not)


@dataclass
class PrefixKV:
    """A prefix's keys (after rotary) and values, per layer (kv_heads, length, head_dim)."""

    k: list
    v: list

    @property
    def length(self) -> int:
        return int(self.k[0].shape[1])

    def sliced(self, n: int) -> PrefixKV:
        """The first n positions: under causal attention, exactly their own cache."""
        return PrefixKV([t[:, :n] for t in self.k], [t[:, :n] for t in self.v])

    def extended(self, new: PrefixKV) -> PrefixKV:
        import torch

        return PrefixKV([torch.cat([a, b], 1) for a, b in zip(self.k, new.k, strict=True)],
                        [torch.cat([a, b], 1) for a, b in zip(self.v, new.v, strict=True)])


@dataclass
class Segment:
    ids: list[int]
    prefix: PrefixKV | None = None  # attended to before ids; positions continue after it


@dataclass
class _Layer:
    ln1: object
    qkv: object
    qkv_b: object
    o: object
    o_b: object
    ln2: object
    gu: object
    down: object


class PackedModel:
    """A decoder's weights laid out for the packed forward.

    ``originals``: float32 tensors by parameter name (``LocalLM.exact_weights``); given,
    this is the model's float32 twin, built on them (the float32 recheck runs the
    float32 model, not float32 arithmetic on rounded weights). ``dtype`` forces the
    compute dtype (float32 for a twin without originals: its weights upcast at use)."""

    def __init__(self, model, originals: Any = None, dtype: Any = None):
        import torch

        cfg = text_config(model)
        dec = model.get_decoder()
        names = {id(p): n for n, p in model.named_parameters()}

        def get(param):
            t = param.detach()
            return originals[names[id(param)]] if originals is not None and id(param) in names else t

        self.rotary = dec.rotary_emb
        self.embed_w = get(dec.embed_tokens.weight)
        head = model.get_output_embeddings()
        self.head_w, self.head_b = get(head.weight), (get(head.bias) if getattr(head, "bias", None) is not None else None)
        self.norm_w = get(dec.norm.weight).float()
        self.eps = float(getattr(dec.norm, "variance_epsilon", getattr(cfg, "rms_norm_eps", 1e-6)))
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.inter = cfg.intermediate_size
        self.dtype = dtype or (torch.float32 if originals is not None else dec.embed_tokens.weight.dtype)
        # bfloat16 runs its norms, rotary and SiLU-product as fused native passes
        # (engine/native/elementwise.c); float32 (a recheck's numbers) keeps torch's.
        self.fused = self.dtype == torch.bfloat16 and native.elementwise_kernels() is not None
        # The model's own weights: q/k/v and gate/up fused, the modules' weights becoming
        # views (no copy); a twin's: fused copies of the originals.
        fuse = (lambda mods, attr: _fuse(mods, attr)) if originals is None else (
            lambda mods, attr: torch.cat([get(getattr(m, attr)) for m in mods]))
        self.layers = []
        with torch.no_grad():
            for layer in dec.layers:
                a, m = layer.self_attn, layer.mlp
                self.layers.append(_Layer(
                    ln1=get(layer.input_layernorm.weight).float(),
                    qkv=fuse([a.q_proj, a.k_proj, a.v_proj], "weight"),
                    qkv_b=fuse([a.q_proj, a.k_proj, a.v_proj], "bias") if a.q_proj.bias is not None else None,
                    o=get(a.o_proj.weight), o_b=_opt(a.o_proj.bias, get),
                    ln2=get(layer.post_attention_layernorm.weight).float(),
                    gu=fuse([m.gate_proj, m.up_proj], "weight"), down=get(m.down_proj.weight),
                ))

    def embed(self, ids):
        import torch.nn.functional as F

        return F.embedding(ids, self.embed_w)

    def _norm(self, x, w):
        import torch.nn.functional as F

        return F.rms_norm(x, (x.shape[-1],), w, self.eps)

    def forward(self, segs: Sequence[Segment], keep: str = "last", kv_out: bool = False):
        """Final-normed hidden states (float32) at each segment's last token
        (``keep="last"``, one row per segment) or at all tokens (``"all"``, segment after
        segment), and, with ``kv_out``, each segment's own PrefixKV (float32)."""
        import torch

        cdt = self.dtype

        def wt(t):  # a twin without originals computes in float32 on upcast weights
            return t if t is None or t.dtype == cdt else t.to(cdt)

        geo = _Geometry(segs, self.norm_w.device, self.rotary,
                        self.heads // self.kv_heads if self._native_ok() else None)
        x = self.embed(geo.ids).float()
        new_k, new_v = [], []
        last = len(self.layers) - 1
        for li, L in enumerate(self.layers):
            q, k, v = self._qkv(self.norm_to(x, L.ln1), wt(L.qkv), wt(L.qkv_b), geo)
            if kv_out:
                new_k.append(k)
                new_v.append(v)
            o = self._attention(q, k, v, li, geo)
            if keep == "last" and li == last:
                # The last layer's keys and values are every token's, but its output
                # projection and MLP only the kept tokens': the rest feed nothing (about
                # 1/layers of the products). A kept row's numbers change only as a batch
                # of another size changes them (float32 matmuls pick kernels by size).
                at = torch.tensor(geo.lens, device=x.device).cumsum(0) - 1
                x, o = x[at], o[at]
            # the residual stream stays float32: a product's output is added in place, widened
            # as it is read (the same numbers as casting it first, one pass fewer)
            x.add_(torch.nn.functional.linear(o.reshape(o.shape[0], -1).to(cdt), wt(L.o), wt(L.o_b)))
            x = self._mlp(x, L, wt)
        h = self._norm(x, self.norm_w)
        return (h, _split_kv(new_k, new_v, geo.lens)) if kv_out else (h, None)

    def norm_to(self, x, w):
        """RMSNorm of the float32 residual, in the products' dtype."""
        return native.rms_norm_bf16(x, w, self.eps) if self.fused else self._norm(x, w).to(self.dtype)

    def rotated(self, qkv, cos, sin):
        """(q, k, v) in float32 from a fused q/k/v output (tokens, width), rotary (cos,
        sin: (tokens, 1, head_dim)) applied to q and k."""
        h_, kh, d = self.heads, self.kv_heads, self.head_dim
        if self.fused:
            return native.qkv_rotary(qkv, cos[:, 0], sin[:, 0], h_, kh, d)
        # attention in float32: its caches are exact for a float32 recheck. Rotary runs on
        # q and k at once (the same elementwise numbers as one at a time, in fewer passes).
        qkv = qkv.float()
        qk = qkv[:, : (h_ + kh) * d].view(qkv.shape[0], h_ + kh, d)
        qk = qk * cos + _rotate_half(qk) * sin
        return qk[:, :h_], qk[:, h_:], qkv[:, (h_ + kh) * d:].view(qkv.shape[0], kh, d)

    def silu_mul(self, gu):
        """SiLU(gate) * up from a fused gate/up output."""
        import torch.nn.functional as F

        if self.fused:
            return native.silu_mul_bf16(gu, self.inter)
        return F.silu(gu[:, : self.inter]) * gu[:, self.inter:]

    def _native_ok(self) -> bool:
        return native.packed_applies(_float32(), self.heads, self.kv_heads, self.head_dim)

    def _qkv(self, hs, w, b, geo: _Geometry):
        """Fused q/k/v projection, rotary applied; attention inputs in float32."""
        import torch.nn.functional as F

        return self.rotated(F.linear(hs, w, b), geo.cos, geo.sin)

    def _attention(self, q, k, v, li: int, geo: _Geometry):
        """Each segment against its prefix and causally its own tokens: in one pass by the
        native kernel (engine/native), else its own tokens by torch's fused kernel merged
        with the prefix part by log-sum-exp."""
        import torch

        if geo.native is not None:
            return native.packed_attention(q, k, v, geo.native, [(p.k[li], p.v[li]) for p in geo.prefix_list],
                                           self.head_dim ** -0.5)
        o, lse_s = self._self_attention(q, k, v, geo)
        if not geo.groups:
            return o
        o_p = torch.zeros_like(o)
        lse_p = torch.full_like(lse_s, float("-inf"))
        for key, (pre, _) in geo.groups.items():
            r = geo.rows[key]
            og, lg = _flash()(q[r].transpose(0, 1)[None], pre.k[li][None], pre.v[li][None], 0.0, False,
                              scale=self.head_dim ** -0.5)[:2]
            o_p.index_copy_(0, r, og[0].transpose(0, 1))
            lse_p.index_copy_(0, r, lg[0].transpose(0, 1))
        lse = torch.logaddexp(lse_p, lse_s)
        return o_p * torch.exp(lse_p - lse).unsqueeze(-1) + o * torch.exp(lse_s - lse).unsqueeze(-1)

    def _self_attention(self, q, k, v, geo: _Geometry):
        """Right-padded rectangles of segments of similar length (a pad only follows real
        tokens, so causal attention needs no mask); (output, log-sum-exp) per real token."""
        import torch

        h_, kh, d = self.heads, self.kv_heads, self.head_dim
        rect, slot = geo.rect, geo.slot
        qp = q.new_zeros(rect, h_, d).index_copy_(0, slot, q)
        kp = k.new_zeros(rect, kh, d).index_copy_(0, slot, k)
        vp = v.new_zeros(rect, kh, d).index_copy_(0, slot, v)
        o_r = torch.empty(rect, h_, d, dtype=q.dtype, device=q.device)
        l_r = torch.empty(rect, h_, device=q.device)
        for off, n, w in geo.buckets:
            part = slice(off, off + n * w)
            o_b, l_b = _flash()(qp[part].view(n, w, h_, d).transpose(1, 2), kp[part].view(n, w, kh, d).transpose(1, 2),
                                vp[part].view(n, w, kh, d).transpose(1, 2), 0.0, True, scale=d ** -0.5)[:2]
            o_r[part] = o_b.transpose(1, 2).reshape(n * w, h_, d)
            l_r[part] = l_b.transpose(1, 2).reshape(n * w, h_)
        return o_r[slot], l_r[slot]

    def _mlp(self, x, L: _Layer, wt):
        import torch.nn.functional as F

        gu = F.linear(self.norm_to(x, L.ln2), wt(L.gu))
        return x.add_(F.linear(self.silu_mul(gu), wt(L.down)))


def _flash():
    import torch

    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


class _Geometry:
    """A packed batch's layout: token ids and positions, rotary tables, the length
    buckets of the self-attention rectangles, and the rows of each prefix group."""

    def __init__(self, segs: Sequence[Segment], dev, rotary, native_group: int | None = None):
        import torch

        self.lens = lens = [len(s.ids) for s in segs]
        self.total = sum(lens)
        self.ids = torch.tensor([t for s in segs for t in s.ids], device=dev)
        local = torch.cat([torch.arange(n, device=dev) for n in lens])
        seg_of = torch.repeat_interleave(torch.arange(len(segs), device=dev), torch.tensor(lens, device=dev))
        pos = local + torch.tensor([s.prefix.length if s.prefix else 0 for s in segs], device=dev)[seg_of]
        self.buckets, self.slot = _buckets(lens, dev)
        self.rect = sum(n * w for _, n, w in self.buckets)
        cos, sin = rotary(torch.empty(0, device=dev, dtype=torch.float32), pos[None])
        self.cos, self.sin = cos[0, :, None, :], sin[0, :, None, :]
        self.groups: dict[int, tuple[PrefixKV, list[int]]] = {}
        start = 0
        for s, n in zip(segs, lens, strict=True):
            if s.prefix is not None:
                self.groups.setdefault(id(s.prefix), (s.prefix, []))[1].extend(range(start, start + n))
            start += n
        self.rows = {key: torch.tensor(r, device=dev) for key, (_, r) in self.groups.items()}
        self.native = None  # the native kernel's layout, when it runs these rows
        self.prefix_list = [pre for pre, _ in self.groups.values()]
        if native_group is not None:
            index = {key: i for i, key in enumerate(self.groups)}
            self.native = native.PackedLayout(lens, [index[id(s.prefix)] if s.prefix is not None else -1 for s in segs],
                                              native_group, dev)


def _split_kv(new_k: list, new_v: list, lens: list[int]) -> list[PrefixKV]:
    kvs, start = [], 0
    for n in lens:
        kvs.append(PrefixKV([t[start:start + n].transpose(0, 1).contiguous() for t in new_k],
                            [t[start:start + n].transpose(0, 1).contiguous() for t in new_v]))
        start += n
    return kvs


def _buckets(lens: Sequence[int], dev, fill: float = 0.6):
    """Segments in rectangles of similar length: (offset, rows, width) per rectangle, and
    each token's row in their concatenation. A segment joins the current rectangle while
    its length is at least ``fill`` of the width, so padding stays under 1/fill."""
    import torch

    order = sorted(range(len(lens)), key=lambda i: -lens[i])
    buckets: list[tuple[int, int, int]] = []
    where = [0] * len(lens)
    off = n = w = 0
    for i in order:
        if n and lens[i] < fill * w:
            buckets.append((off, n, w))
            off, n = off + n * w, 0
        if n == 0:
            w = lens[i]
        where[i] = off + n * w
        n += 1
    buckets.append((off, n, w))
    slot = torch.cat([torch.arange(where[i], where[i] + lens[i], device=dev) for i in range(len(lens))])
    return buckets, slot


def _rotate_half(x):
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _opt(t, get=None):
    return None if t is None else (get(t) if get is not None else t.detach())


def _fuse(linears, attr: str):
    """One matrix (or bias) for several linears over the same input; each module's
    parameter becomes a view of it, so memory is not doubled."""
    import torch

    fused = torch.cat([getattr(lin, attr).detach() for lin in linears])
    start = 0
    for lin in linears:
        n = getattr(lin, attr).shape[0]
        getattr(lin, attr).data = fused[start:start + n]
        start += n
    return fused


def supports(model: Any, device: Any) -> str | None:
    """None if the packed forward runs this model, else why not."""
    import torch

    why = supports_config(text_config(model), device)
    if why is not None:
        return why
    quantizer = getattr(model, "hf_quantizer", None)
    # A GGUF file is dequantized at load: its quantizer stays attached, the weights are plain.
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if quantizer is not None and getattr(method, "value", method) != "gguf":
        return "quantized or tensor-parallel weights"
    if any(p.dtype not in (torch.float32, torch.bfloat16, torch.float16) for p in model.parameters()):
        return "weights not in a float dtype"
    return None


def supports_config(cfg: Any, device: Any) -> str | None:
    """What of ``supports`` the model's text config and the device decide (all of it for
    weights loaded in a float dtype without a quantizer)."""
    import torch

    if getattr(cfg, "model_type", None) not in SUPPORTED:
        return f"architecture {getattr(cfg, 'model_type', '?')}"
    if device.type != "cpu" or not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return "not a CPU"
    if has_sliding_window(cfg) or getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "mlp_bias", False):
        return "sliding window, activation or MLP bias"
    if getattr(cfg, "pretraining_tp", 1) != 1:
        return "quantized or tensor-parallel weights"
    return None


def packed_for(model: Any, device: Any) -> tuple[PackedModel | None, str | None]:
    """The packed forward of ``model``, built once per model, or None and why not."""
    if model not in _PACKED:
        why = supports(model, device)
        _PACKED[model] = (PackedModel(model) if why is None else None, why)
    return _PACKED[model]


def _float32():
    import torch

    return torch.float32
