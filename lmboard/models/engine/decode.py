"""Decoding many sequences at once on the packed forward, into a slotted KV cache.

The continuous-batching scheduler (scheduler.py) keeps up to ``slots`` sequences in
flight. Their keys and values live in one preallocated cache per layer,
``(slots, kv_heads, capacity, head_dim)``, in the model's dtype; the sequences in
flight always occupy slots ``0..B-1`` (a finished sequence's slot takes the last one's
cache), so every step works on views, never on gathered copies.

One decode step runs B tokens, one per sequence, as a (B, hidden) matrix through the
packed forward's fused q/k/v and gate/up projections; each new key and value is written
at its sequence's own position; attention (bfloat16 or float32 cache) is the native kernel
(native/decode_attention.c: each sequence over its own length, float32 queries), else
one fused torch CPU kernel call per layer over the first ``max(length)`` positions with
an additive mask for each sequence's end. The residual stream stays in float32 as in
the packed forward.

Prompts are prefilled on the packed forward itself: many prompts per forward, no
padding, each on top of the start it shares with others (computed once, scheduler.py),
and their caches copied into free slots.

Matrix products in bfloat16 run on weights reordered once for oneDNN (prepacked): the
plain ``linear`` reorders its weight on every call, which at decode batch sizes costs
about a third of the product's time. The results are the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lmboard.models.engine import native
from lmboard.models.engine.packed import PackedModel, PrefixKV, Segment, _flash

Linear = Callable[[Any], Any]


def _prepacked(w: Any, b: Any, hint: int) -> Linear:
    """``x @ w.T + b`` on a oneDNN-reordered copy of ``w`` (bfloat16/float16 on a CPU),
    or the plain product where oneDNN cannot, or where the copy would not match it."""
    import torch
    import torch.nn.functional as F

    def plain(x):
        return F.linear(x, w, b)

    mk = getattr(torch.ops, "mkldnn", None)
    if hint <= 0 or w.dtype not in (torch.bfloat16, torch.float16) or not torch.backends.mkldnn.is_available() \
            or not hasattr(mk, "_reorder_linear_weight"):
        return plain
    try:
        packed = mk._reorder_linear_weight(w, hint)
        probe = torch.randn(2, w.shape[1], dtype=w.dtype)
        if not torch.equal(mk._linear_pointwise(probe, packed, b, "none", [], ""), plain(probe)):
            return plain
    except RuntimeError:
        return plain
    return lambda x: mk._linear_pointwise(x, packed, b, "none", [], "")


class DecodeWeights:
    """Each layer's four products (q/k/v, o, gate/up, down) and the LM head, prepacked
    for decode where that helps; built once per packed model."""

    def __init__(self, pm: PackedModel, head: Any, hint: int = 64, prepack: bool = True):
        import torch

        if not prepack:  # plain products on the model's own weights (no extra memory)
            hint = 0
        with torch.no_grad():
            self.layers = [(_prepacked(L.qkv, L.qkv_b, hint), _prepacked(L.o, L.o_b, hint),
                            _prepacked(L.gu, None, hint), _prepacked(L.down, None, hint)) for L in pm.layers]
            self.head = _prepacked(head.weight.detach(), _bias(head), hint)
        self.head_weight, self.head_bias = head.weight.detach(), _bias(head)


def _bias(lin: Any) -> Any:
    b = getattr(lin, "bias", None)
    return None if b is None else b.detach()


def cache_bytes_per_token(pm: PackedModel) -> int:
    """Bytes of keys and values one token holds across all layers."""
    return len(pm.layers) * 2 * pm.kv_heads * pm.head_dim * pm.dtype.itemsize


class SlotCache:
    """Keys and values of ``slots`` sequences of up to ``capacity`` tokens each."""

    def __init__(self, pm: PackedModel, slots: int, capacity: int):
        import torch

        shape = (slots, pm.kv_heads, capacity, pm.head_dim)
        # The native kernel reads a slot only below its length (positions written before),
        # so its cache is left unwritten: zeroing one sized for the longest prompt in every
        # slot touched gigabytes (3.7 s of a ShopBench run) that most sequences never
        # reach. torch's kernel reads up to the longest length under a mask, and 0 x NaN
        # from stale memory would be NaN: its cache is zeroed.
        alloc = torch.empty if native.applies(pm.dtype, pm.heads, pm.kv_heads, pm.head_dim) else torch.zeros
        self.k = [alloc(shape, dtype=pm.dtype) for _ in pm.layers]
        self.v = [alloc(shape, dtype=pm.dtype) for _ in pm.layers]
        self.lens = torch.zeros(slots, dtype=torch.long)

    def put(self, slot: int, kv: PrefixKV, start: int = 0) -> None:
        """Write a cache of positions ``start..`` into ``slot``."""
        n = kv.length
        for li in range(len(self.k)):
            self.k[li][slot, :, start:start + n] = kv.k[li]
            self.v[li][slot, :, start:start + n] = kv.v[li]
        self.lens[slot] = start + n

    def move(self, src: int, dst: int) -> None:
        """Slot ``src``'s sequence now lives in ``dst``."""
        n = int(self.lens[src])
        for t in (*self.k, *self.v):
            t[dst, :, :n] = t[src, :, :n]
        self.lens[dst] = n


class Decoder:
    """Prefill into slots and decode steps, on a packed model's weights."""

    def __init__(self, pm: PackedModel, weights: DecodeWeights, cache: SlotCache):
        self.pm, self.w, self.cache = pm, weights, cache
        # decode attention on the native kernel where it compiled (bfloat16 and float32 caches)
        self.native = native.applies(pm.dtype, pm.heads, pm.kv_heads, pm.head_dim)

    def prefill(self, slots: Sequence[int], rows: Sequence[Sequence[int]],
                bases: PrefixKV | None | Sequence[PrefixKV | None]):
        """Run each row on top of its base (a start it shares with others, already run;
        one for all rows, one per row, or None) into its slot; returns the final-normed
        hidden state at each row's last token (float32)."""
        per_row = bases if isinstance(bases, (list, tuple)) else [bases] * len(rows)
        segs = [Segment(list(r[b.length if b is not None else 0:]), b) for r, b in zip(rows, per_row, strict=True)]
        h, kvs = self.pm.forward(segs, kv_out=True)
        for slot, kv, base in zip(slots, kvs, per_row, strict=True):
            n = 0
            if base is not None:
                self.cache.put(slot, base)
                n = base.length
            self.cache.put(slot, kv, n)
        return h

    def step(self, tokens: Any):
        """One token for each of the sequences in slots ``0..len(tokens)-1``, written to
        the cache at its own position; returns their final-normed hidden states."""
        import torch

        pm, cache, b = self.pm, self.cache, int(tokens.shape[0])
        pos = cache.lens[:b].clone()
        cos, sin = pm.rotary(torch.empty(0, dtype=torch.float32), pos[None])
        cos, sin = cos[0, :, None, :], sin[0, :, None, :]
        width = 0 if self.native else int(pos.max()) + 1  # torch's kernel: the longest length, masked
        mask = None if self.native else torch.zeros(b, 1, 1, width, dtype=pm.dtype).masked_fill_(
            (torch.arange(width)[None, :] > pos[:, None])[:, None, None, :], float("-inf"))
        rows, (h_, d), dt = torch.arange(b), (pm.heads, pm.head_dim), pm.dtype
        x = pm.embed(tokens).float()
        for li, (L, (qkv_w, o_w, gu_w, down_w)) in enumerate(zip(pm.layers, self.w.layers, strict=True)):
            q, k, v = pm.rotated(qkv_w(pm.norm_to(x, L.ln1)), cos, sin)  # rotary in float32
            cache.k[li][rows, :, pos] = k.to(dt)
            cache.v[li][rows, :, pos] = v.to(dt)
            if self.native:  # float32 queries, each sequence over exactly its own length
                o = native.decode_attention(q, cache.k[li], cache.v[li], pos + 1, d ** -0.5).to(dt)
            else:
                o = _flash()(q[:, :, None, :].to(dt), cache.k[li][:b, :, :width], cache.v[li][:b, :, :width],
                             0.0, False, attn_mask=mask, scale=d ** -0.5)[0]
            x.add_(o_w(o.reshape(b, h_ * d)))  # the residual stays float32
            x.add_(down_w(pm.silu_mul(gu_w(pm.norm_to(x, L.ln2)))))
        cache.lens[:b] += 1
        return self._norm(x, pm.norm_w)

    def extend(self, rows: Sequence[Sequence[int]]):
        """Several tokens for each sequence in slots ``0..len(rows)-1`` in one packed
        forward on its own cache (speculative decoding: its last token and a guessed
        continuation). Returns the final-normed hidden state at every token, row after
        row, and each row's keys and values; nothing is written (``accept`` keeps some).
        The new tokens attend to one another in float32 where a decode step would have
        rounded their keys and values to the cache's dtype first: in bfloat16 the
        numbers differ from step by step's by that rounding (a close call's answer can
        change; the float32 recheck decides those)."""
        c = self.cache
        segs = [Segment(list(ids), PrefixKV([k[slot, :, :int(c.lens[slot])].float() for k in c.k],
                                            [v[slot, :, :int(c.lens[slot])].float() for v in c.v]))
                for slot, ids in enumerate(rows)]
        return self.pm.forward(segs, keep="all", kv_out=True)

    def accept(self, slot: int, kv: PrefixKV, n: int) -> None:
        """The first ``n`` tokens' keys and values of ``kv`` (from ``extend``) join the slot's cache."""
        self.cache.put(slot, kv.sliced(n), int(self.cache.lens[slot]))

    def _norm(self, x, w):
        """RMSNorm as one fused kernel (the same numbers as the packed forward's)."""
        import torch.nn.functional as F

        return F.rms_norm(x, (x.shape[-1],), w, self.pm.eps)

    def logits(self, h):
        """Full-vocabulary logits in float32 (for sampling)."""
        return self.w.head(h.to(self.pm.dtype)).float()

    def greedy(self, h, candidates: int = 4):
        """The argmax token of each row. In reduced precision the head's logits are
        rounded (bfloat16 keeps 8 bits: two tokens can tie); the best few are computed
        again in float32 and the largest of those wins, as a float32 head would pick."""
        if self.pm.dtype == _float32():
            return self.w.head(h).argmax(-1)
        return self.candidates(h, candidates)[0][:, 0]

    def candidates(self, h, k: int = 4):
        """Each row's best ``k`` tokens and their logits in float32, best first (the
        logits computed again in float32 from the float32 hidden state where the head
        runs in reduced precision)."""
        import torch

        logits = self.w.head(h.to(self.pm.dtype))
        if logits.dtype == torch.float32:
            val, top = logits.topk(k, dim=-1)
            return top, val
        top = logits.topk(k, dim=-1).indices
        exact = torch.einsum("bh,bch->bc", h.float(), self.w.head_weight[top].float())
        if self.w.head_bias is not None:
            exact = exact + self.w.head_bias[top].float()
        val, order = exact.sort(dim=-1, descending=True, stable=True)
        return top.gather(1, order), val


def _float32():
    import torch

    return torch.float32
