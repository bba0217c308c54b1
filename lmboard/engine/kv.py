"""Forward passes on top of a shared prefix KV cache (transformers models)."""

from __future__ import annotations

from collections.abc import Sequence


def prefix_kv(lm, ids: Sequence[int]):
    """The per-layer (key, value) tensors of ``ids``, computed once (batch of 1)."""
    import torch

    x = torch.tensor([list(ids)], device=lm.device)
    out = lm.model(input_ids=x, use_cache=True, logits_to_keep=1)
    return [(layer.keys, layer.values) for layer in out.past_key_values.layers]


def _expanded_cache(lm, kv, batch: int):
    """A fresh DynamicCache whose layers view the prefix tensors expanded to ``batch``
    rows (no copy; the forward's concatenation makes new tensors, so the shared prefix
    is never modified)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=lm.model.config)
    for layer, (k, v) in zip(cache.layers, kv, strict=True):
        layer.lazy_initialization(k, v)
        layer.keys = k.expand(batch, -1, -1, -1)
        layer.values = v.expand(batch, -1, -1, -1)
    return cache


def slice_kv(kv, n: int):
    """The cache of the first n positions: under causal attention it is exactly the
    cache those n tokens would have on their own."""
    return [(k[:, :, :n], v[:, :, :n]) for k, v in kv]


def extend_kv(lm, kv, n_prefix: int, ids: Sequence[int]):
    """The cache of prefix + ids, computing only ids on top of the prefix's cache."""
    import torch

    cache = _expanded_cache(lm, kv, 1)
    x = torch.tensor([list(ids)], device=lm.device)
    pos = torch.arange(n_prefix, n_prefix + len(ids), device=lm.device).unsqueeze(0)
    lm.model.get_decoder()(input_ids=x, position_ids=pos, past_key_values=cache, use_cache=True)
    return [(layer.keys, layer.values) for layer in cache.layers]


def hidden_on_prefix(lm, kv, n_prefix: int, suffixes: Sequence[Sequence[int]]):
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
    decoder = lm.model.get_decoder()
    if kv is not None and getattr(lm, "prefix_attention", False):
        from lmboard.engine.prefix_attention import shared_prefix

        heads = lm.model.config.get_text_config().num_attention_heads
        with shared_prefix(kv, heads):  # the prefix is attended to in place, never copied per row
            return decoder(input_ids=x, position_ids=pos, use_cache=False).last_hidden_state
    cache = _expanded_cache(lm, kv, b) if kv is not None else None
    out = decoder(input_ids=x, position_ids=pos, past_key_values=cache, use_cache=cache is not None)
    return out.last_hidden_state


def head_logits(lm, h):
    """The LM head on selected hidden states, with the model's final soft-capping."""
    import torch

    logits = lm.model.get_output_embeddings()(h)
    cap = getattr(lm.model.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


def target_logits(lm, h, targets, lse: bool = False):
    """Logits of the ``targets`` columns only, computed in float32 whatever the model's
    dtype: a bfloat16 logit keeps 8 bits of mantissa (steps of 0.06 near 10), enough to
    flip close answers; the few target rows of the head cost nothing in float32.
    ``lse``: one more column, the log-sum-exp over the whole vocabulary (so that a
    target's log-probability is its logit minus it), from the full head in float32."""
    import torch

    head = lm.model.get_output_embeddings()
    w = head.weight.float() if lse else head.weight[targets].float()
    logits = h.float() @ w.T
    if getattr(head, "bias", None) is not None:
        logits = logits + (head.bias if lse else head.bias[targets]).float()
    cap = getattr(lm.model.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    if lse:
        logits = torch.cat([logits[:, targets], torch.logsumexp(logits, dim=-1, keepdim=True)], dim=-1)
    return logits


def forward_on_prefix(lm, kv, n_prefix: int, suffixes: Sequence[Sequence[int]], targets, lse: bool = False):
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
    exact_prefix = False

    def __init__(self, lm):
        self.lm = lm

    def prefixes(self, reqs):
        """(cache grown from, its tokens kept, new ids) each; the transformers cache takes one per forward."""
        return [prefix_kv(self.lm, ids) if base is None else extend_kv(self.lm, slice_kv(base, n), n, ids)
                for base, n, ids in reqs]

    def sliced(self, cache, n: int):
        return slice_kv(cache, n)

    def exact_twin(self):
        return None  # close calls are rechecked on the packed forward only

    def score(self, segs, targets, lse: bool = False):
        pre = segs[0][0]
        n_prefix = 0 if pre is None else int(pre[0][0].shape[2])
        return forward_on_prefix(self.lm, pre, n_prefix, [ids for _, ids in segs], targets, lse)
