"""Forward passes on top of a shared prefix KV cache, on the transformers forward."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmboard.models.engine import transformers_api
from lmboard.models.engine.arch import final_softcap, text_config
from lmboard.models.engine.local import LocalLM
from lmboard.models.engine.prefix_attention import prefix_attention_enabled, shared_prefix

KV = list[tuple[Any, Any]]  # per layer (keys, values), each (1, kv_heads, length, head_dim)


def prefix_kv(lm: LocalLM, ids: Sequence[int]) -> KV:
    """The per-layer (key, value) tensors of ``ids``, computed once (batch of 1)."""
    import torch

    _, cache = transformers_api.model_forward(lm.model, torch.tensor([list(ids)], device=lm.device))
    return transformers_api.cache_layers(cache)


def slice_kv(kv: KV, n: int) -> KV:
    """The cache of the first n positions: under causal attention it is exactly the
    cache those n tokens would have on their own."""
    return [(k[:, :, :n], v[:, :, :n]) for k, v in kv]


def extend_kv(lm: LocalLM, kv: KV, n_prefix: int, ids: Sequence[int]) -> KV:
    """The cache of prefix + ids, computing only ids on top of the prefix's cache."""
    import torch

    cache = transformers_api.fill_cache(transformers_api.new_cache(lm.model), kv, 1)
    x = torch.tensor([list(ids)], device=lm.device)
    pos = torch.arange(n_prefix, n_prefix + len(ids), device=lm.device).unsqueeze(0)
    transformers_api.decoder_forward(lm.model, x, pos, cache)
    return transformers_api.cache_layers(cache)


def hidden_on_prefix(lm: LocalLM, kv: KV | None, n_prefix: int, suffixes: Sequence[Sequence[int]]):
    """Final hidden states (B, L, H) of right-padded ``suffixes`` run after the prefix.

    Right padding needs no attention mask: pads come after every real token, and the
    causal mask already keeps real tokens from seeing them.
    """
    import torch

    b, width = len(suffixes), max(len(s) for s in suffixes)
    pad = lm.tokenizer.pad_token_id or 0
    x = torch.full((b, width), pad, dtype=torch.long)
    for i, s in enumerate(suffixes):
        x[i, : len(s)] = torch.tensor(list(s))
    x = x.to(lm.device)
    pos = torch.arange(n_prefix, n_prefix + width, device=lm.device).unsqueeze(0).expand(b, -1)
    if kv is not None and prefix_attention_enabled(lm.model, lm.device):
        with shared_prefix(kv, text_config(lm.model).num_attention_heads):  # attended in place, never copied per row
            return transformers_api.decoder_forward(lm.model, x, pos).last_hidden_state
    cache = transformers_api.fill_cache(transformers_api.new_cache(lm.model), kv, b) if kv is not None else None
    return transformers_api.decoder_forward(lm.model, x, pos, cache).last_hidden_state


def _softcap(lm: LocalLM, logits):
    import torch

    cap = final_softcap(text_config(lm.model))
    return torch.tanh(logits / cap) * cap if cap else logits


def head_logits(lm: LocalLM, h):
    """The LM head on selected hidden states, with the model's final soft-capping."""
    return _softcap(lm, lm.model.get_output_embeddings()(h)).float()


def target_logits(lm: LocalLM, h, targets, lse: bool = False):
    """Logits of the ``targets`` columns only, computed in float32 whatever the model's
    dtype: a bfloat16 logit keeps 8 bits of mantissa (steps of 0.06 near 10), enough to
    flip close answers; the few target rows of the head cost nothing in float32.
    ``lse``: two more columns, the log-sum-exp over the whole vocabulary (so that a
    target's log-probability is its logit minus it) and the largest logit (a target
    equal to it is the greedy choice), from the full head in float32."""

    head = lm.model.get_output_embeddings()
    return target_logits_on(lm, head.weight, getattr(head, "bias", None), h, targets, lse)


def target_logits_on(lm: LocalLM, weight, bias, h, targets, lse: bool = False):
    """``target_logits`` with the head's ``weight`` and ``bias`` given (a float32 twin's)."""
    import torch

    w = weight.float() if lse else weight[targets].float()
    logits = h.float() @ w.T
    if bias is not None:
        logits = logits + (bias if lse else bias[targets]).float()
    logits = _softcap(lm, logits)
    if lse:
        logits = torch.cat([logits[:, targets], torch.logsumexp(logits, dim=-1, keepdim=True),
                            logits.max(dim=-1, keepdim=True).values], dim=-1)
    return logits


def forward_on_prefix(lm: LocalLM, kv: KV | None, n_prefix: int, suffixes: Sequence[Sequence[int]], targets,
                      lse: bool = False):
    """Logits of the ``targets`` columns at each suffix's last real token: (B, T) float32."""
    import torch

    h = hidden_on_prefix(lm, kv, n_prefix, suffixes)
    last = torch.tensor([len(s) - 1 for s in suffixes], device=h.device)
    h_last = h[torch.arange(len(suffixes), device=h.device), last]
    return target_logits(lm, h_last, targets, lse)


class HFRunner:
    """The scoring engine's runner on the transformers forward: one prefix per batch
    (its cache is expanded to the batch's rows), right-padded suffixes."""

    one_prefix_per_batch = True

    def __init__(self, lm: LocalLM):
        self.lm = lm

    def prefixes(self, reqs) -> list[KV]:
        """The transformers cache takes one prefix per forward (in the model's dtype:
        this runner has no float32 twin)."""
        return [prefix_kv(self.lm, ids) if base is None else extend_kv(self.lm, slice_kv(base, n), n, ids)
                for base, n, ids in reqs]

    def sliced(self, cache: KV, n: int) -> KV:
        return slice_kv(cache, n)

    def exact_twin(self) -> None:
        return None  # close calls are rechecked on the packed forward only

    def score(self, segs, targets, lse: bool = False):
        pre = segs[0][0]
        n_prefix = 0 if pre is None else int(pre[0][0].shape[2])
        return forward_on_prefix(self.lm, pre, n_prefix, [ids for _, ids in segs], targets, lse)
