"""The LM protocol: what every backend offers the tasks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from lmboard.config import GenerationSettings, ModelSpec


@dataclass(frozen=True)
class GenRequest:
    """One prompt: chat messages (rendered with the model's template) or raw text."""

    key: str
    messages: tuple[dict[str, str], ...] = ()
    text: str | None = None


@dataclass
class GenResult:
    key: str
    output: str
    prompt: str  # the rendered prompt as sent (chat template applied)
    prompt_tokens: int | None
    output_tokens: int | None
    latency_s: float
    finish_reason: str
    settings: dict[str, Any] = field(default_factory=dict)  # effective values
    error: str | None = None


@runtime_checkable
class LM(Protocol):
    """Any model lmboard can run: local, endpoint, or registered function."""

    spec: ModelSpec

    def info(self) -> dict[str, Any]:
        """Provenance: what produced the results (dtype, tokenizer, versions...)."""
        ...

    def generate(
        self, requests: Sequence[GenRequest], settings: GenerationSettings
    ) -> Iterator[GenResult]:
        """Answers, yielded as they complete (in any order; match by key)."""
        ...


@runtime_checkable
class StreamingLM(LM, Protocol):
    def stream(self, messages: Sequence[dict[str, str]], settings: GenerationSettings) -> Iterator[str]:
        """Text pieces of one chat answer as they are produced."""
        ...


@runtime_checkable
class ScoringLM(LM, Protocol):
    """A local model whose logits the scoring engine can read (hf backend)."""

    model: Any
    tokenizer: Any
    device: Any
    max_length: int
