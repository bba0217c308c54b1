"""The hf backend's runtimes, behind the LM protocol's methods.

- ``cpu``: lmboard's CPU engine, for Llama, Mistral and Qwen2 on a CPU: the packed
  forward with its C kernels, few-shot prefix reuse, the continuous scheduler with its
  speculative tail, and the float32 recheck of reduced-precision decisions;
- ``generic``: any architecture on any device: transformers' forward (SDPA) with the
  same token-budget batching and prefix reuse through transformers' cache for scoring,
  and transformers' continuous batching for greedy generation (generic.py).

``auto`` takes ``cpu`` where it runs the model, else ``generic``. Which one ran is
recorded in the provenance (``runtime``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lmboard.errors import UsageError
from lmboard.lm import GenerationSettings, GenRequest, GenResult, Scored, ScoreRequest
from lmboard.models.engine.continuous import GEN_RECHECK, continuous_groups
from lmboard.models.engine.generation import generate_static, prefill_ids, stream_one
from lmboard.models.engine.local import LocalLM
from lmboard.models.engine.packed import packed_for, supports, supports_config
from lmboard.models.engine.requests import score_requests
from lmboard.models.engine.scheduler import SchedulerSettings
from lmboard.models.engine.scoring import EngineSettings

Groups = Sequence[tuple[Sequence[GenRequest], GenerationSettings]]


@dataclass(frozen=True)
class RuntimeSettings:
    """How the runtime runs (the hf backend's runtime options). Only ``recheck`` can move
    a result, and only towards float32's."""

    runtime: str = "auto"
    batch_tokens: int | None = None  # scoring: tokens per batch; None: the largest that fits, halved on OOM
    prefix_reuse: bool = True  # scoring: each shared few-shot prefix computed once
    # reduced precision: close decisions rechecked on the float32 model; None: auto (a
    # calibrated margin for scores, GEN_RECHECK for greedy answers); 0: off
    recheck: float | None = None
    batch_size: int | None = None  # generation: sequences in flight (continuous) or prompts per batch (static)
    scheduler: str = "continuous"  # generation: continuous batching, or static batches (transformers' generate)


class Runtime:
    """One loaded model's runtime: ``cpu`` or ``generic`` (see the module's docstring)."""

    def __init__(self, lm: LocalLM, settings: RuntimeSettings):
        # weights not loaded yet (a described model: float weights, no quantizer) are
        # decided by their config alone
        why = supports(lm.model, lm.device) if lm.weights_loaded else supports_config(lm.config.get_text_config(),
                                                                                       lm.device)
        if settings.runtime == "cpu" and why is not None:
            raise UsageError(f"model spec: runtime=cpu does not run this model ({why}); use runtime=auto or generic")
        self.lm, self.settings = lm, settings
        self.name = "cpu" if why is None and settings.runtime != "generic" else "generic"
        self.note = None if self.name == "cpu" else f"generic: {why or 'by request'}"

    def packed(self) -> Any:
        """The packed model (the CPU runtime), or None."""
        return packed_for(self.lm.model, self.lm.device)[0] if self.name == "cpu" else None

    def identity(self, work: str) -> dict[str, Any]:
        """What of the runtime can move the results of ``work`` (see LM.run_identity)."""
        s, reduced = self.settings, self.lm.dtype_name != "float32"
        if work == "choose":
            return {"recheck_margin": ("calibrated" if s.recheck is None else s.recheck) if reduced else None}
        if work == "greedy":
            return {"gen_recheck": (GEN_RECHECK if s.recheck is None else s.recheck) if reduced else None}
        if work == "generate":
            return {"batch_size": s.batch_size, "scheduler": s.scheduler}
        return {}

    def score(self, requests: Sequence[ScoreRequest], exact: bool,
              stored: Mapping[str, Scored]) -> Generator[list[Scored], None, dict | None]:
        s = self.settings
        engine = EngineSettings(s.batch_tokens, s.prefix_reuse, self.name == "cpu", s.recheck)
        return score_requests(self.lm, requests, engine, exact, stored)

    def generate(self, groups: Groups, skip: Callable[[str], bool] | None, exact: bool) -> Iterator[GenResult]:
        """Each group's requests with its settings; on the CPU runtime's continuous
        scheduler all groups decode in one job (a group's short answers leave room for
        another's long ones). ``exact``: greedy answers that came close to a tie in a
        reduced dtype are decoded again in float32 (continuous.py)."""
        s = self.settings
        if skip is not None and all(skip(r.key) for reqs, _ in groups for r in reqs):
            return  # all stored: the weights need not load
        pm = self.packed() if s.scheduler == "continuous" else None
        if pm is not None:
            recheck = (GEN_RECHECK if s.recheck is None else s.recheck) if exact else 0.0
            yield from continuous_groups(self.lm, pm, groups, skip, SchedulerSettings(max_batch=s.batch_size), recheck)
        elif self.name == "generic" and s.scheduler == "continuous":
            from lmboard.models.engine.generic import generate_cb

            yield from generate_cb(self.lm, groups, skip, s.batch_size)
        else:
            for reqs, st in groups:
                yield from generate_static(self.lm, reqs, st, s.batch_size, skip)

    def stream(self, messages: Sequence[dict[str, str]], settings: GenerationSettings) -> Iterator[str]:
        return stream_one(self.lm, messages, settings)

    def prefill(self, ids: Sequence[Sequence[int]]) -> None:
        prefill_ids(self.lm, self.packed() if self.settings.scheduler == "continuous" else None, ids)

    def decode_exactly(self, ids: Sequence[Sequence[int]], new_tokens: int,
                       on_step: Callable[[], None]) -> list[list[int]]:
        from lmboard.models.engine.generation import decode_exactly

        return decode_exactly(self.lm, self.packed() if self.settings.scheduler == "continuous" else None,
                              ids, new_tokens, on_step)
