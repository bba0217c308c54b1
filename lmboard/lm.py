"""The LM protocol: what a model offers the jobs and the engines, and the records they share.

A backend (lmboard.models) implements these protocols and declares what it can do in
``capabilities``; a job asks with ``require`` and a model that cannot serve it is a
one-line error naming the capability, never an AttributeError. The engine reads only
what ``LocalLM`` declares.

    Capability.GENERATE   lm.generate(requests, settings, concurrency): endpoints, plugins
    Capability.STREAM     lm.stream(messages, settings, usage): a chat answer piece by piece
    Capability.LOGPROBS   lm.first_token_logprobs(...): the top log-probabilities of an answer's first token
    Capability.LOGITS     a local model (LocalLM): the engines score and generate on its weights
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from lmboard.errors import UsageError


class Capability(StrEnum):
    GENERATE = "generate"
    STREAM = "stream"
    LOGPROBS = "logprobs"
    LOGITS = "logits"


@dataclass(frozen=True)
class ModelSpec:
    """What model to run and how: ``backend:name`` plus the backend's own options record.

    ``options`` is the frozen dataclass its backend registered (HFOptions, OpenAIOptions...)."""

    backend: str
    name: str
    options: Any = None
    label: str | None = None

    def option(self, key: str, default: Any = None) -> Any:
        return getattr(self.options, key, default)

    def with_options(self, where: str = "model spec", **changes: Any) -> ModelSpec:
        """A copy with some options changed, validated as the backend validates its options;
        an option the backend lacks is a one-line error (``where`` names the flag)."""
        for k in changes:
            if self.options is None or k not in {f.name for f in dataclasses.fields(self.options)}:
                raise UsageError(f"{where}: the {self.backend} backend has no option {k!r}")
        options = dataclasses.replace(self.options, **changes)
        if hasattr(options, "validate"):
            options.validate(where)
        return dataclasses.replace(self, options=options)

    @property
    def display_name(self) -> str:
        if self.label:
            return self.label
        base = self.option("gguf_file") or self.name  # a GGUF is named after its file
        return Path(base.rstrip("/")).name.removesuffix(".gguf") or base

    def to_dict(self) -> dict[str, Any]:
        opts = dataclasses.asdict(self.options) if self.options is not None else {}
        return {"backend": self.backend, "name": self.name, **opts, "label": self.label}

    def canonical(self) -> str:
        """A stable text form (used in run keys and judgment cache keys); the label is left out."""
        d = {k: v for k, v in self.to_dict().items() if v not in (None, False) and k != "label"}
        return json.dumps(d, sort_keys=True)


@dataclass(frozen=True)
class GenerationSettings:
    """Generation settings, named as in transformers' GenerationConfig.

    ``None`` means "the model's own generation_config decides" (the record shows the
    effective value)."""

    max_new_tokens: int = 512
    min_new_tokens: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int = 0
    stop: tuple[str, ...] = ()
    system: str | None = None
    raw: bool = False
    ignore_eos: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d


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
    capabilities: frozenset[Capability]

    def info(self) -> dict[str, Any]:
        """Provenance: what produced the results (dtype, tokenizer, versions...)."""
        ...

    def check(self) -> None:
        """Fail early with a one-line error if the model cannot be used (an unreachable endpoint)."""
        ...


class GeneratingLM(LM, Protocol):
    def generate(self, requests: Sequence[GenRequest], settings: GenerationSettings,
                 concurrency: int = 8) -> Iterator[GenResult]:
        """Answers, yielded as they complete (in any order; match by key)."""
        ...


class StreamingLM(LM, Protocol):
    def stream(self, messages: Sequence[dict[str, str]], settings: GenerationSettings,
               usage: dict[str, int] | None = None) -> Iterator[str]:
        """Text pieces of one chat answer as they are produced; ``usage`` receives the
        server's token counts when it sends them."""
        ...


class LogprobLM(LM, Protocol):
    def first_token_logprobs(self, request: GenRequest, settings: GenerationSettings,
                             top: int) -> tuple[GenResult, dict[str, float] | None]:
        """One answer and the top log-probabilities of its first token (None if not given)."""
        ...


class LocalLM(LM, Protocol):
    """A model whose weights run in this process: the engines read its logits.

    ``model`` is a transformers causal LM (``torch.nn.Module``), ``tokenizer`` its tokenizer."""

    model: Any
    tokenizer: Any
    device: Any
    dtype_name: str
    max_length: int

    def encode(self, text: str, special: bool = True) -> list[int]: ...

    def encode_pair(self, context: str, continuation: str, special: bool = True) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids), the continuation's being what the tokenizer
        gives context + continuation beyond the context's own ids (see ``encode_pair``)."""
        ...

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str: ...

    def eos_token_ids(self) -> list[int]: ...


def encode_pair(tokenizer: Any, context: str, continuation: str, special: bool = True) -> tuple[list[int], list[int]]:
    """Context and continuation ids as lm-evaluation-harness takes them: the continuation's
    ids are those that ``tokenizer(context + continuation)`` has beyond ``tokenizer(context)``,
    so they are exactly the ids a model sees. When the two do not line up (the continuation
    merged into the context's last token), the continuation's own ids stand in."""
    ctx = tokenizer(context, add_special_tokens=special).input_ids
    whole = tokenizer(context + continuation, add_special_tokens=special).input_ids
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, tokenizer(continuation, add_special_tokens=False).input_ids


L = TypeVar("L")


def capability_error(spec: ModelSpec, capabilities: frozenset[Capability], capability: Capability,
                     job: str) -> UsageError:
    have = ", ".join(sorted(capabilities)) or "none"
    return UsageError(f"{job} needs the '{capability}' capability, which model {spec.display_name} "
                      f"({spec.backend} backend) does not have (it has: {have})")


def require(lm: LM, capability: Capability, job: str, kind: type[L] | None = None) -> L:
    """``lm`` if it has ``capability``, else a one-line error naming the job and the capability.
    ``kind`` (a protocol such as LocalLM) only types the result for the caller."""
    if capability not in lm.capabilities:
        raise capability_error(lm.spec, lm.capabilities, capability, job)
    return lm  # type: ignore[return-value]
