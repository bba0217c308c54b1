"""Typed configuration records shared by the CLI and the library.

Text such as ``hf:PATH,dtype=bfloat16`` is turned into these objects by the parsers
below, which only the CLI calls; library functions take the typed objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from lmboard.errors import UsageError

DTYPES = ("auto", "float32", "bfloat16", "float16")
LOAD_IN = ("8bit", "4bit")


@dataclass(frozen=True)
class ModelSpec:
    """What model to run and how to load it.

    backend: ``hf`` (local folder, hub id or GGUF), ``openai`` (an OpenAI-compatible
    endpoint) or ``plugin`` (a function registered with ``@register_llm_infer``).
    """

    backend: str
    name: str
    gguf_file: str | None = None
    adapter: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    device_map: str | None = None
    load_in: str | None = None
    trust_remote_code: bool = False
    revision: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    mode: str = "chat"  # openai: chat | completions
    label: str | None = None

    @property
    def display_name(self) -> str:
        if self.label:
            return self.label
        base = self.gguf_file or self.name
        return Path(base.rstrip("/")).name.removesuffix(".gguf") or base

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def canonical(self) -> str:
        """A stable text form (used in run keys and judgment cache keys)."""
        d = {k: v for k, v in self.to_dict().items() if v not in (None, False) and k != "label"}
        return json.dumps(d, sort_keys=True)


@dataclass(frozen=True)
class GenerationSettings:
    """Generation settings, named as in transformers' GenerationConfig.

    ``None`` means "the model's own generation_config decides" (and the record
    shows the effective value).
    """

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

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass(frozen=True)
class EngineSettings:
    """How the scoring engine batches work."""

    batch_tokens: int | None = None  # None: automatic (largest that fits, halved on OOM)
    prefix_reuse: bool = True
    max_length: int | None = None  # None: the model's context length
    packed: bool = True  # the packed forward where the model allows it (engine/packed.py)
    # In bfloat16, answers whose two best letters are closer than this (in logits) are
    # scored again in float32: bfloat16 moves letter logits by up to ~0.1 on SmolLM2.
    recheck_margin: float = 0.05


@dataclass(frozen=True)
class ExamSettings:
    """A multiple-choice exam run (MMLU, CMMLU, C-Eval)."""

    task: str
    data: Path
    subjects: tuple[str, ...] = ()
    limit: int | None = None
    shots: int = 5
    letter_token: str = "spaced"  # spaced: " A" as after "Answer:"; bare: tokenizer("A")[-1]
    chat: bool = False
    engine: EngineSettings = field(default_factory=EngineSettings)

    def key_dict(self) -> dict:
        """Everything that changes the numbers (batching does not)."""
        return {
            "task": self.task,
            "data": str(Path(self.data).resolve()),
            "subjects": list(self.subjects),
            "limit": self.limit,
            "shots": self.shots,
            "letter_token": self.letter_token,
            "chat": self.chat,
            "max_length": self.engine.max_length,
        }


def stable_hash(obj: object, n: int = 16) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


# ---------------------------------------------------------------- parsing (CLI only)

_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_SPEC_FIELDS = {f.name: f for f in dataclasses.fields(ModelSpec)}


def parse_kv(text: str, what: str) -> dict[str, str]:
    """``a=1,b=2`` -> {"a": "1", "b": "2"}; a one-line error names the bad part."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise UsageError(f"{what}: expected key=value, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def parse_model_spec(text: str) -> ModelSpec:
    """Parse ``BACKEND:NAME[,key=value...]`` or ``ALIAS[,key=value...]``.

    openai models are written ``openai:MODEL@BASE_URL``; plugins ``plugin:NAME``.
    """
    from lmboard.models.registry import resolve_alias

    text = text.strip()
    if not text:
        raise UsageError("model spec: empty")
    head, _, rest = text.partition(",")
    opts = parse_kv(rest, f"model spec {text!r}")
    backend, sep, name = head.partition(":")
    if not sep or backend not in ("hf", "openai", "plugin"):
        base = resolve_alias(head)
        if base is None:
            raise UsageError(
                f"model spec {head!r}: unknown model alias (use smollm2, hf:PATH, openai:MODEL@URL or plugin:NAME)"
            )
        kwargs = base.to_dict()
        kwargs.setdefault("label", head)
        kwargs["label"] = kwargs["label"] or head
    else:
        kwargs = {"backend": backend, "name": name}
        if backend == "openai":
            model, at, url = name.rpartition("@")
            if not at:
                raise UsageError(f"model spec {text!r}: write openai:MODEL@BASE_URL")
            kwargs.update(name=model, base_url=url)
    if not kwargs["name"]:
        raise UsageError(f"model spec {text!r}: missing model name or path")
    for k, v in opts.items():
        f = _SPEC_FIELDS.get(k)
        if f is None or k in ("backend", "name"):
            raise UsageError(f"model spec {text!r}: unknown option {k!r}")
        if k == "trust_remote_code":
            if v.lower() not in _BOOL:
                raise UsageError(f"model spec {text!r}: trust_remote_code must be true or false")
            kwargs[k] = _BOOL[v.lower()]
        else:
            kwargs[k] = v
    spec = ModelSpec(**kwargs)
    if spec.dtype not in DTYPES:
        raise UsageError(f"model spec {text!r}: dtype must be one of {', '.join(DTYPES)}")
    if spec.load_in is not None and spec.load_in not in LOAD_IN:
        raise UsageError(f"model spec {text!r}: load_in must be 8bit or 4bit")
    if spec.mode not in ("chat", "completions"):
        raise UsageError(f"model spec {text!r}: mode must be chat or completions")
    return spec
