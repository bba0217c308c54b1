"""The runner protocol: how the scoring engine runs a model, whichever forward it uses.

Two runners exist: ``PackedRunner`` (engine/packed_runner.py, on engine/packed.py: segments packed without padding,
several prefixes per batch, Llama-family models on CPU) and ``HFRunner`` (engine/kv.py:
the transformers forward, one prefix per batch, right-padded). The planner asks a runner
only ``one_prefix_per_batch``; the scoring loop calls the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from lmboard.models.engine.local import LocalLM

Cache = Any  # a runner's own prefix cache type (PrefixKV, or per-layer (key, value) tensors)
# (cache it grows from or None, tokens of that cache kept, the new ids)
PrefixRequest = tuple[Cache | None, int, Sequence[int]]


class Runner(Protocol):
    one_prefix_per_batch: bool  # True: every row of a batch runs on the same prefix cache

    def prefixes(self, reqs: Sequence[PrefixRequest]) -> list[Cache]:
        """The caches of several prefixes (a twin's serve its model too: float32 keys and values)."""
        ...

    def sliced(self, cache: Cache, n: int) -> Cache:
        """The cache of the first n positions (under causal attention, exactly their own)."""
        ...

    def score(self, segs: Sequence[tuple[Cache | None, list[int]]], targets: Any, lse: bool = False) -> Any:
        """(rows, targets [+1]) float32 logits of ``targets`` at each segment's last token."""
        ...

    def exact_twin(self) -> Runner | None:
        """The float32 model's forward for rechecking close calls; None when there is none."""
        ...


def make_runner(lm: LocalLM, packed: bool) -> tuple[Runner, str, str | None]:
    """(runner, "packed" or "transformers", why the packed forward is off or None)."""
    from lmboard.models.engine.kv import HFRunner
    from lmboard.models.engine.packed import packed_for
    from lmboard.models.engine.packed_runner import PackedRunner

    why = "off by request"
    if packed:
        pm, why = packed_for(lm.model, lm.device)
        if pm is not None:
            return PackedRunner(lm, pm), "packed", None
    return HFRunner(lm), "transformers", None if not packed else f"packed forward off: {why}"
