"""The LM protocol: what a model offers the jobs, and the records they share.

A backend (lmboard.models) implements these protocols and declares what it can do in
``capabilities``; a job asks with ``require`` (or, before loading, the registry's
``require_backend``) and a model that cannot serve it is a one-line error naming the
capability, never an AttributeError. Jobs reach inference only through these methods:
batching, prefix reuse, kernels and reduced-precision checks are the backend's business.

    Capability.SCORE      lm.score(requests): log-likelihoods of continuations, logits of target ids
    Capability.GENERATE   lm.generate(requests, settings): answers as they finish
    Capability.STREAM     lm.stream(messages, settings): a chat answer piece by piece
    Capability.LOGPROBS   lm.first_token_logprobs(...): the top log-probabilities of an answer's first token
    Capability.TOKENIZE   lm.encode / decode / render_chat: prompts measured and cut in the model's tokens
    Capability.TIMING     lm.prefill / decode_exactly on token ids: exact work for lmboard speed
    Capability.TRAIN      lm.trainable(): the module and tokenizer a LoRA fine-tune trains
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from lmboard.errors import UsageError


class Capability(StrEnum):
    SCORE = "score"
    GENERATE = "generate"
    STREAM = "stream"
    LOGPROBS = "logprobs"
    TOKENIZE = "tokenize"
    TIMING = "timing"
    TRAIN = "train"


def runtime_option(default: Any, **kwargs: Any) -> Any:
    """A backend option that says how the backend runs, not which model it runs (a batch
    size, a kernel choice, a precision check): left out of the spec's canonical form. What
    of it can move a result, the backend's ``run_identity`` says."""
    return field(default=default, metadata={"runtime": True}, **kwargs)


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

    def has_option(self, key: str) -> bool:
        return self.options is not None and key in {f.name for f in dataclasses.fields(self.options)}

    def with_options(self, where: str = "model spec", **changes: Any) -> ModelSpec:
        """A copy with some options changed, validated as the backend validates its options;
        an option the backend lacks is a one-line error (``where`` names the flag)."""
        if not changes:
            return self
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
        """A stable text form (used in run keys and judgment cache keys); the label and the
        runtime options (``runtime_option``) are left out."""
        runtime = {f.name for f in dataclasses.fields(self.options) if f.metadata.get("runtime")} \
            if self.options is not None else set()
        d = {k: v for k, v in self.to_dict().items() if v not in (None, False) and k != "label" and k not in runtime}
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
    """One prompt: chat messages (rendered with the model's template) or raw text.
    ``settings``: this request's own (a routed benchmark's route); None: the call's."""

    key: str
    messages: tuple[dict[str, str], ...] = ()
    text: str | None = None
    settings: GenerationSettings | None = None


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
    note: dict[str, Any] | None = None  # the backend's record of how it made the answer (stored with it)


@dataclass(frozen=True)
class ScoreRequest:
    """One context to score, as token ids: the summed log-probability of each
    continuation after it, or the logits of ``targets`` at its last position.
    ``prefix``: the text of a start it shares with other requests (a few-shot header),
    a hint for computing that start once."""

    key: str
    ids: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...] = ()
    targets: tuple[int, ...] = ()
    prefix: str = ""


@dataclass
class Scored:
    """A request's result. ``final`` False: provisional, to be decided later by the
    backend (stored as such, handed back on resume). ``note``: the backend's record of
    how it made the result, opaque to jobs: stored with it (and shown), handed back on resume."""

    key: str
    logits: list[float] | None = None  # the targets' logits at the last position
    logprobs: list[float] | None = None  # each continuation's summed log-probability
    greedy: list[bool] | None = None  # each continuation is the greedy choice at each of its tokens
    final: bool = True
    note: dict[str, Any] | None = None


def sum_counters(total: dict[str, Any] | None, more: dict[str, Any] | None) -> dict[str, Any] | None:
    """Engine counters of two parts of a job (two ranks, two request groups): integers
    added, ``*_bound`` the larger, anything else the first's."""
    if total is None or more is None:
        return total if more is None else dict(more)
    out = dict(total)
    for k, v in more.items():
        if k not in out:
            out[k] = v
        elif k.endswith("_bound") and isinstance(v, float | int):
            out[k] = max(out[k], v)
        elif isinstance(v, int) and not isinstance(v, bool) and k != "batch_tokens":
            out[k] += v
    return out


class ScoreRun:
    """The batches of results of one ``score`` call, as the backend makes them (each to be
    stored in one transaction); ``stats`` holds the backend's counters once exhausted."""

    def __init__(self, batches: Generator[list[Scored], None, dict | None]):
        self._batches = batches
        self.stats: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[list[Scored]]:
        self.stats = yield from self._batches


@runtime_checkable
class LM(Protocol):
    """Any model lmboard can run: local, endpoint, or registered function."""

    spec: ModelSpec
    capabilities: frozenset[Capability]

    def info(self) -> dict[str, Any]:
        """Provenance: what produced the results (dtype, runtime, tokenizer, versions...)."""
        ...

    def check(self) -> None:
        """Fail early with a one-line error if the model cannot be used (an unreachable endpoint).
        A backend may also define ``check_for(needs: frozenset[Capability])``: the checks
        of what a job will ask (an endpoint's probe for prompt log-probabilities before
        it scores), called after ``check`` before any work."""
        ...

    def run_identity(self, work: str) -> dict[str, Any]:
        """What beyond its spec and dtype can move this backend's results of ``work``
        (WORK_CHOOSE, WORK_GREEDY, WORK_GENERATE): entries a job puts in its run key."""
        ...


# ``work`` of run_identity: scores whose argmax is the answer (score(..., exact=True));
# greedy answers made the full-precision model's (generate(..., exact=True)); generation.
WORK_CHOOSE, WORK_GREEDY, WORK_GENERATE = "choose", "greedy", "generate"


class TokenizingLM(LM, Protocol):
    """A model whose tokenizer runs here: prompts are measured, cut and scored in its tokens."""

    max_length: int  # the context length

    def encode(self, text: str, special: bool = True) -> list[int]: ...

    def encode_many(self, texts: Sequence[str], special: bool = True) -> list[list[int]]: ...

    def encode_pair(self, context: str, continuation: str, special: bool = True) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids), the continuation's being what the tokenizer
        gives context + continuation beyond the context's own ids (see ``encode_pair``)."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def has_chat_template(self) -> bool: ...

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str: ...

    def eos_token_ids(self) -> list[int]: ...


class ScoringLM(TokenizingLM, Protocol):
    def score(self, requests: Sequence[ScoreRequest], exact: bool = False,
              stored: Mapping[str, Scored] | None = None) -> ScoreRun:
        """Results of ``requests`` in batches. Requests are planned together, stored ones
        included, so that a resumed run computes what an uninterrupted one would;
        ``stored``: what the job holds of them (final ones are not computed again,
        provisional ones only decided). ``exact``: the job takes the argmax of the targets'
        logits; a backend computing in reduced precision may make it its full-precision
        model's (provisional results are then possible)."""
        ...


class GeneratingLM(LM, Protocol):
    def generate(self, requests: Sequence[GenRequest], settings: GenerationSettings, concurrency: int = 8,
                 skip: Callable[[str], bool] | None = None, exact: bool = False) -> Iterator[GenResult]:
        """Answers, yielded as they complete (in any order; match by key). ``skip``: keys
        answered already (a backend that plans batches over every request still plans
        them, so that a resumed run batches as an uninterrupted one). ``exact``: greedy
        answers should be the full-precision model's where the backend can check them."""
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


class TimingLM(TokenizingLM, Protocol):
    """Exact work on token ids, for timing (lmboard speed)."""

    def prefill(self, ids: Sequence[Sequence[int]]) -> None:
        """One forward over equal-length prompts (timed alone)."""
        ...

    def decode_exactly(self, ids: Sequence[Sequence[int]], new_tokens: int,
                       on_step: Callable[[], None]) -> list[list[int]]:
        """Greedy, exactly ``new_tokens`` per prompt (end of sequence ignored), on the
        runtime ``generate`` uses; ``on_step`` after each step's tokens exist."""
        ...

    def plain_token_ids(self) -> list[int]:
        """The ordinary (not special) token ids, in order: synthetic prompts are drawn from them."""
        ...

    def synchronize(self) -> None:
        """Wait for the device's queued work (before reading a clock)."""
        ...

    def memory(self, reset: bool = False) -> dict[str, float]:
        """Peak memory in MB since the last reset (``reset``: start a new peak)."""
        ...


class TrainableLM(TokenizingLM, Protocol):
    def trainable(self) -> tuple[Any, Any]:
        """(a transformers causal LM module ready to train and save, its tokenizer)."""
        ...


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


def continuation_ids(lm: TokenizingLM, context: str, continuations: Sequence[str],
                     special: bool = True) -> tuple[list[int], list[list[int]]]:
    """(context ids, each continuation's ids after it), as ``encode_pair`` takes them."""
    ctx: list[int] = []
    out = []
    for c in continuations:
        ctx, ids = lm.encode_pair(context, c, special)
        out.append(ids)
    return ctx, out


def by_settings(requests: Sequence[GenRequest],
                settings: GenerationSettings) -> list[tuple[list[GenRequest], GenerationSettings]]:
    """Consecutive requests with the same settings (their own, else the call's), in order."""
    groups: list[tuple[list[GenRequest], GenerationSettings]] = []
    for r in requests:
        st = r.settings or settings
        if groups and groups[-1][1] == st:
            groups[-1][0].append(r)
        else:
            groups.append(([r], st))
    return groups


L = TypeVar("L")


def capability_error(spec: ModelSpec, capabilities: frozenset[Capability], capability: Capability,
                     job: str, hint: str = "") -> UsageError:
    have = ", ".join(sorted(capabilities)) or "none"
    return UsageError(f"{job} needs the '{capability}' capability, which model {spec.display_name} "
                      f"({spec.backend} backend) does not have (it has: {have})" + (f": {hint}" if hint else ""))


def require(lm: LM, capability: Capability, job: str, kind: type[L] | None = None) -> L:
    """``lm`` if it has ``capability``, else a one-line error naming the job and the capability.
    ``kind`` (a protocol such as ScoringLM) only types the result for the caller."""
    if capability not in lm.capabilities:
        raise capability_error(lm.spec, lm.capabilities, capability, job)
    return lm  # type: ignore[return-value]
