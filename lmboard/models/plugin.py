"""Registered inference functions as models: ``plugin:NAME``.

A function registered with ``@register_llm_infer("name")`` takes ``texts: list[str]``
(the prompts, rendered by nobody: the function owns its model's template) and keyword
generation settings, and returns one answer per text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lmboard.errors import UsageError
from lmboard.lm import Capability, GenerationSettings, GenRequest, GenResult, ModelSpec, by_settings
from lmboard.registry import INFER, register_model


@dataclass(frozen=True)
class PluginOptions:
    batch_size: int = 16  # texts per call of the function

    def validate(self, where: str) -> None:
        if self.batch_size < 1:
            raise UsageError(f"{where}: batch_size must be >= 1")


@register_model("plugin", options=PluginOptions)
class PluginModel:
    capabilities = frozenset({Capability.GENERATE})

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.fn = INFER.find(spec.name)
        if self.fn is None:
            known = ", ".join(INFER.names()) or "none registered"
            raise UsageError(f"plugin:{spec.name}: no inference function of that name ({known}); see --plugins")
        self.batch_size = spec.options.batch_size

    def info(self) -> dict[str, Any]:
        return {"model_spec": self.spec.to_dict(), "function": f"{self.fn.__module__}.{self.fn.__qualname__}"}

    def check(self) -> None:
        """Registered means usable."""

    def run_identity(self, work: str) -> dict[str, Any]:
        return {}  # the function's own settings are its business

    def generate(self, requests: Sequence[GenRequest], settings: GenerationSettings, concurrency: int = 8,
                 skip: Callable[[str], bool] | None = None, exact: bool = False) -> Iterator[GenResult]:
        todo = [r for r in requests if skip is None or not skip(r.key)]
        for group, st in by_settings(todo, settings):
            yield from self._generate(group, st)

    def _generate(self, requests: Sequence[GenRequest], settings: GenerationSettings) -> Iterator[GenResult]:
        kwargs = {k: v for k, v in settings.to_dict().items() if v is not None and k not in ("raw", "ignore_eos")}
        for i in range(0, len(requests), self.batch_size):
            chunk = requests[i : i + self.batch_size]
            texts = [r.text if r.text is not None else r.messages[-1]["content"] for r in chunk]
            t0 = time.perf_counter()
            outs = self.fn(texts, **kwargs)
            latency = time.perf_counter() - t0
            if not isinstance(outs, list) or len(outs) != len(texts):
                raise UsageError(f"plugin:{self.spec.name}: must return a list of {len(texts)} strings")
            for r, text, out in zip(chunk, texts, outs, strict=True):
                yield GenResult(r.key, str(out), text, None, None, latency, "unknown", kwargs)
