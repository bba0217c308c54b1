"""The scoring engine's runner on the packed forward (engine/packed.py), and the float32
twin its close calls are rechecked on."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from lmboard.models.engine.local import LocalLM
from lmboard.models.engine.packed import PackedModel, PrefixKV, Segment


class PackedRunner:
    """The scoring engine's runner on the packed forward: a batch may mix prefixes."""

    one_prefix_per_batch = False

    def __init__(self, lm: LocalLM, pm: PackedModel):
        self.lm, self.pm = lm, pm

    def exact_twin(self) -> PackedRunner | None:
        """The float32 model's runner, for close calls: on the checkpoint's float32
        originals where the backend kept them (``LocalLM.exact_weights``), else on this
        model's weights upcast (exact when the checkpoint is stored in this dtype)."""
        return None if self.pm.dtype == torch_float32() else PackedRunner(self.lm, float32_twin(self.lm, self.pm))

    def prefixes(self, reqs: Sequence[tuple[PrefixKV | None, int, Sequence[int]]]) -> list[PrefixKV]:
        """Several prefix caches in one packed forward: (cache grown from, its tokens kept, new ids)."""
        starts = [base.sliced(n) if base is not None else None for base, n, _ in reqs]
        news = self.pm.forward([Segment(list(ids), st) for (_, _, ids), st in zip(reqs, starts, strict=True)],
                               kv_out=True)[1]
        return [st.extended(new) if st is not None else new for st, new in zip(starts, news, strict=True)]

    def sliced(self, cache: PrefixKV, n: int) -> PrefixKV:
        return cache.sliced(n)

    def score(self, segs: Sequence[tuple[PrefixKV | None, list[int]]], targets, lse: bool = False):
        from lmboard.models.engine.kv import target_logits_on

        h, _ = self.pm.forward([Segment(ids, pre) for pre, ids in segs])
        return target_logits_on(self.lm, self.pm.head_w, self.pm.head_b, h, targets, lse)


def torch_float32():
    import torch

    return torch.float32


_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # PackedModel -> its float32 twin


def float32_twin(lm: LocalLM, pm: PackedModel) -> PackedModel:
    """The float32 model beside ``pm``, built once: on ``lm.exact_weights`` where the
    backend kept them; else the same weights upcast once (when they fit in 2 GB) or at
    each use."""
    if pm not in _TWINS:
        import torch

        originals = getattr(lm, "exact_weights", None)
        if originals is None and _weight_bytes(pm) * 2 < 2 << 30:
            originals = {n: p.detach().float() for n, p in lm.model.named_parameters() if p.is_floating_point()}
        _TWINS[pm] = PackedModel(lm.model, originals, dtype=torch.float32)
    return _TWINS[pm]


def _weight_bytes(pm: PackedModel) -> int:
    return sum(t.numel() * t.element_size() for L in pm.layers for t in (L.qkv, L.o, L.gu, L.down))
