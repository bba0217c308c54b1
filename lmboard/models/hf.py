"""Hugging Face causal LMs: a local folder, a hub id, a GGUF file, a PEFT adapter, on any device.

The backend loads the model (hf_load.py) and answers the LM protocol on one of its
runtimes (engine/runtime.py): lmboard's CPU engine where it runs the model, else the
generic one on transformers' forward and continuous batching."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lmboard.errors import UsageError
from lmboard.lm import (
    Capability,
    GenerationSettings,
    GenRequest,
    GenResult,
    ModelSpec,
    Scored,
    ScoreRequest,
    ScoreRun,
    by_settings,
    runtime_option,
)
from lmboard.models import hf_load
from lmboard.models.hf_tokens import HFTokenizing
from lmboard.registry import register_model

DTYPES = ("auto", "float32", "bfloat16", "float16")
LOAD_IN = ("8bit", "4bit")
RUNTIMES = ("auto", "cpu", "generic")
SCHEDULERS = ("continuous", "static")


@dataclass(frozen=True)
class HFOptions:
    """Options of ``hf:NAME``: a folder, a hub id or a GGUF file; then how it runs."""

    gguf_file: str | None = None
    adapter: str | None = None
    dtype: str = "auto"  # auto: bfloat16 where the hardware computes it natively, else float32
    device: str = "auto"
    device_map: str | None = None
    load_in: str | None = None  # 8bit | 4bit (bitsandbytes)
    trust_remote_code: bool = False
    revision: str | None = None
    # How it runs (runtime options: engine/runtime.py's RuntimeSettings)
    runtime: str = runtime_option("auto")  # auto | cpu (lmboard's CPU engine) | generic (transformers')
    batch_tokens: int | None = runtime_option(None)  # scoring: tokens per batch (auto: the largest that fits)
    prefix_reuse: bool = runtime_option(True)  # scoring: each shared few-shot prefix computed once
    recheck: float | None = runtime_option(None)  # reduced precision: close calls redone in float32 (auto, M, 0: off)
    batch_size: int | None = runtime_option(None)  # generation: sequences in flight (auto: from memory)
    scheduler: str = runtime_option("continuous")  # generation: continuous | static (transformers' generate)

    def validate(self, where: str) -> None:
        if self.dtype not in DTYPES:
            raise UsageError(f"{where}: dtype must be one of {', '.join(DTYPES)}")
        if self.load_in is not None and self.load_in not in LOAD_IN:
            raise UsageError(f"{where}: load_in must be 8bit or 4bit")
        if self.runtime not in RUNTIMES:
            raise UsageError(f"{where}: runtime must be one of {', '.join(RUNTIMES)} (got {self.runtime!r})")
        if self.scheduler not in SCHEDULERS:
            raise UsageError(f"{where}: scheduler must be one of {', '.join(SCHEDULERS)} (got {self.scheduler!r})")
        for name in ("batch_tokens", "batch_size"):
            if (v := getattr(self, name)) is not None and v < 1:
                raise UsageError(f"{where}: {name} must be auto or a positive integer (got {v})")
        if self.recheck is not None and not self.recheck >= 0:
            raise UsageError(f"{where}: recheck must be auto or a number >= 0 (got {self.recheck})")


def runtime_settings(o: HFOptions) -> Any:
    from lmboard.models.engine.runtime import RuntimeSettings

    return RuntimeSettings(o.runtime, o.batch_tokens, o.prefix_reuse, o.recheck, o.batch_size, o.scheduler)


@register_model("hf", options=HFOptions)
class HFModel(HFTokenizing):
    """A transformers causal LM, loaded once, run by its runtime."""

    capabilities = frozenset({Capability.SCORE, Capability.GENERATE, Capability.STREAM, Capability.TOKENIZE,
                              Capability.TIMING, Capability.TRAIN})

    def __init__(self, spec: ModelSpec):
        """The tokenizer and config now, the weights when an inference method first needs
        them (hf_load.describe): a rerun of a finished run reprints it without them."""
        import torch

        from lmboard.models.engine.runtime import Runtime

        self.spec = spec
        self._box: list[hf_load.Loaded | None] = [None]  # shared by with_runtime's copies
        self.described = hf_load.describe(spec)
        if self.described is None:
            self._take(hf_load.load(spec))
        else:
            d = self.described
            self.tokenizer, self.device, self.dtype_name, self.max_length = (
                d.tokenizer, torch.device(d.device), d.dtype_name, d.max_length)
        self.runtime = Runtime(self, runtime_settings(spec.options))

    def _take(self, loaded: hf_load.Loaded) -> None:
        self.tokenizer = loaded.tokenizer  # a described model's own: load() does not read it again
        self.device, self.dtype_name, self.max_length = loaded.device, loaded.dtype_name, loaded.max_length
        self._box[0] = loaded

    @property
    def _loaded(self) -> hf_load.Loaded | None:
        return self._box[0]

    @property
    def loaded(self) -> hf_load.Loaded:
        if self._box[0] is None:
            self._take(hf_load.load(self.spec, self.described))
        return self._box[0]

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def exact_weights(self) -> dict[str, Any] | None:  # read by the runtime's float32 recheck
        return self.loaded.exact_weights

    @property
    def weights_loaded(self) -> bool:
        return self._loaded is not None

    @property
    def config(self) -> Any:
        return self._loaded.model.config if self._loaded is not None else self.described.config

    @property
    def generation_config(self) -> Any:
        return self._loaded.model.generation_config if self._loaded is not None else self.described.generation_config

    def with_runtime(self, **options: Any) -> HFModel:
        """The same loaded model run with other runtime options (``runtime_option`` fields:
        batch_tokens, recheck, scheduler...), without loading it again."""
        from lmboard.models.engine.runtime import Runtime

        fields = {f.name: f for f in dataclasses.fields(HFOptions)}
        loading = [k for k in options if k in fields and not fields[k].metadata.get("runtime")]
        if loading:
            raise ValueError(f"with_runtime: {', '.join(loading)} choose the weights loaded: load the model again")
        other = copy.copy(self)
        other.spec = self.spec.with_options("runtime options", **options)
        other.runtime = Runtime(other, runtime_settings(other.spec.options))
        return other

    def check(self) -> None:
        """Loaded means usable."""

    # ---- inference, on the runtime
    def run_identity(self, work: str) -> dict[str, Any]:
        return self.runtime.identity(work)

    def score(self, requests: Sequence[ScoreRequest], exact: bool = False,
              stored: Mapping[str, Scored] | None = None) -> ScoreRun:
        return ScoreRun(self.runtime.score(requests, exact, stored or {}))

    def generate(self, requests: Sequence[GenRequest], settings: GenerationSettings, concurrency: int = 8,
                 skip: Callable[[str], bool] | None = None, exact: bool = False) -> Iterator[GenResult]:
        return self.runtime.generate(by_settings(requests, settings), skip, exact)

    def stream(self, messages: Sequence[dict[str, str]], settings: GenerationSettings,
               usage: dict[str, int] | None = None) -> Iterator[str]:
        return self.runtime.stream(messages, settings)

    # ---- exact work for timing
    def prefill(self, ids: Sequence[Sequence[int]]) -> None:
        self.runtime.prefill(ids)

    def decode_exactly(self, ids: Sequence[Sequence[int]], new_tokens: int,
                       on_step: Callable[[], None]) -> list[list[int]]:
        return self.runtime.decode_exactly(ids, new_tokens, on_step)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize()

    def memory(self, reset: bool = False) -> dict[str, float]:
        return hf_load.memory(self.device, reset)

    # ---- training
    def trainable(self) -> tuple[Any, Any]:
        from lmboard.models.engine.transformers_api import detach_gguf_quantizer

        detach_gguf_quantizer(self.model)
        return self.model, self.tokenizer

    def info(self) -> dict[str, Any]:
        import torch

        d, loaded = self.described, self._loaded
        return {
            "model_spec": self.spec.to_dict(),
            "model_class": type(loaded.model).__name__ if loaded else (d.config.architectures or ["?"])[0],
            "dtype": self.dtype_name,
            "dtype_requested": self.spec.options.dtype,
            "device": str(self.device),
            "runtime": self.runtime.name,
            **({"runtime_note": self.runtime.note} if self.runtime.note else {}),
            "tokenizer": self.tokenizer_info(),
            "context_length": self.max_length,
            "gguf_cache": loaded.gguf_cache if loaded else d.gguf_cache,
            "float32_recheck_on": loaded.exact_source if loaded else d.exact_source,
            "threads": torch.get_num_threads(),
            **({"gpu": torch.cuda.get_device_name(self.device)} if self.device.type == "cuda" else {}),
            "versions": loaded.versions if loaded else d.versions,
        }
