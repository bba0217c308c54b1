"""Choosing each sequence's next token from its logits, independently of its batch-mates.

Greedy takes the argmax. Sampling applies transformers' processors in transformers'
order (repetition penalty over the prompt and the answer so far, then temperature,
top-k, top-p) and draws with the sequence's own generator, seeded from the run's seed
and the request's key: an answer depends on its prompt and the seed, never on which
other prompts shared its batch or in which order they were admitted.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def sequence_seed(seed: int, key: str) -> int:
    """The seed of one sequence's generator (stable across runs and machines)."""
    return (seed * 1_000_003 + zlib.crc32(key.encode("utf-8"))) % (2**63 - 1)


@dataclass(frozen=True)
class SamplingConfig:
    """The effective sampling settings (from the generation config)."""

    do_sample: bool
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    min_new_tokens: int = 0
    eos: tuple[int, ...] = ()

    @classmethod
    def from_generation_config(cls, gc: Any) -> SamplingConfig:
        return cls(bool(gc.do_sample), gc.temperature, gc.top_k, gc.top_p, gc.repetition_penalty,
                   int(getattr(gc, "min_new_tokens", None) or 0), tuple(gc.eos_token_id or ()))

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing that changes the logits: the argmax alone decides."""
        return not self.do_sample and self.repetition_penalty in (None, 1.0) and not self.min_new_tokens


def new_generator(seed: int, key: str) -> Any:
    import torch

    g = torch.Generator()
    g.manual_seed(sequence_seed(seed, key))
    return g


def process(cfg: SamplingConfig, logits: Any, seen: Sequence[Sequence[int]], produced: Sequence[int]) -> Any:
    """Logits (B, V) float32 after the processors; ``seen``: each row's prompt and answer
    so far, ``produced``: how many tokens each row has generated."""
    import torch

    if cfg.repetition_penalty not in (None, 1.0):
        p = float(cfg.repetition_penalty)
        for r, ids in enumerate(seen):
            idx = torch.tensor(sorted(set(ids)), dtype=torch.long)
            got = logits[r, idx]
            logits[r, idx] = torch.where(got < 0, got * p, got / p)
    if cfg.min_new_tokens and cfg.eos:
        short = torch.tensor([n < cfg.min_new_tokens for n in produced])
        if short.any():
            logits[short.nonzero()[:, 0][:, None], torch.tensor(cfg.eos)[None, :]] = float("-inf")
    if not cfg.do_sample:
        return logits
    if cfg.temperature not in (None, 1.0):
        logits = logits / float(cfg.temperature)
    if cfg.top_k:
        kth = logits.topk(min(int(cfg.top_k), logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        srt, idx = logits.sort(dim=-1)  # ascending, as transformers' TopPLogitsWarper
        drop = srt.softmax(-1).cumsum(-1) <= 1 - float(cfg.top_p)
        drop[:, -1] = False
        logits = logits.masked_fill(drop.scatter(1, idx, drop), float("-inf"))
    return logits


def choose(cfg: SamplingConfig, logits: Any, generators: Sequence[Any]) -> list[int]:
    """The next token of each row: argmax, or a draw from each row's own generator."""
    import torch

    if not cfg.do_sample:
        return logits.argmax(-1).tolist()
    probs = logits.softmax(-1)
    return [int(torch.multinomial(probs[r], 1, generator=g)) for r, g in enumerate(generators)]
