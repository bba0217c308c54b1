"""OpenAI-compatible endpoints (vLLM, SGLang, llama.cpp, `transformers serve`, hosted APIs),
on the official client: ``openai:MODEL@BASE_URL[|BASE_URL...]``.

Several base URLs serve one model: requests are spread over them in turn. With
``mode=completions`` the model also scores (openai_scoring.py): prompts are tokenized
here with the model's tokenizer (``tokenizer=``: a folder or hub id; default: MODEL).

The API key comes from the environment variable the spec names (default
OPENAI_API_KEY) and never appears in output, logs or results.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
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

RETRIES = 4


@dataclass(frozen=True)
class OpenAIOptions:
    """Options of ``openai:MODEL@BASE_URL``."""

    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"  # the variable's name is recorded, never its value
    mode: str = "chat"  # chat | completions (completions also scores)
    tokenizer: str | None = None  # scoring: the model's tokenizer here (a folder or hub id; default: MODEL)
    timeout: float = 120.0
    concurrency: int = runtime_option(16)  # scoring: requests in flight

    @property
    def urls(self) -> list[str]:
        return [u for u in self.base_url.split("|") if u]

    @staticmethod
    def split_name(name: str, where: str) -> tuple[str, dict[str, str]]:
        model, at, url = name.rpartition("@")
        if not at or not url:
            raise UsageError(f"{where}: write openai:MODEL@BASE_URL")
        return model, {"base_url": url}

    def validate(self, where: str) -> None:
        if self.mode not in ("chat", "completions"):
            raise UsageError(f"{where}: mode must be chat or completions")
        if self.timeout <= 0:
            raise UsageError(f"{where}: timeout must be positive")
        if self.concurrency < 1:
            raise UsageError(f"{where}: concurrency must be >= 1")
        for u in self.urls:
            if not u.startswith(("http://", "https://")):
                raise UsageError(f"{where}: base URL {u!r} must start with http:// or https://")


@register_model("openai", options=OpenAIOptions)
class OpenAIModel(HFTokenizing):
    # Scoring (and the tokenizer it needs) with mode=completions only: capabilities_for.
    capabilities = frozenset({Capability.GENERATE, Capability.STREAM, Capability.LOGPROBS, Capability.SCORE,
                              Capability.TOKENIZE})

    @classmethod
    def capabilities_for(cls, options: OpenAIOptions) -> frozenset[Capability]:
        if options.mode == "completions":
            return cls.capabilities
        return cls.capabilities - {Capability.SCORE, Capability.TOKENIZE}

    @staticmethod
    def capability_hint(capability: Capability) -> str:
        if capability in (Capability.SCORE, Capability.TOKENIZE):
            return "add mode=completions to score on a server that returns prompt log-probabilities (vLLM, SGLang)"
        return ""

    def __init__(self, spec: ModelSpec):
        try:
            import openai
        except ImportError as e:
            raise MissingDependency("openai", "openai") from e
        from lmboard.models.openai_scoring import CompletionScorer

        self.spec = spec
        self.options: OpenAIOptions = spec.options
        self.capabilities = self.capabilities_for(self.options)
        self._openai = openai
        key = os.environ.get(self.options.api_key_env) or "EMPTY"  # local servers take any key
        # The client's own retries are off: ours below also cover timeouts and log nothing secret.
        self.urls = self.options.urls
        self.clients = [openai.OpenAI(base_url=u, api_key=key, max_retries=0, timeout=self.options.timeout)
                        for u in self.urls]
        self.client = self.clients[0]
        self._turn = 0
        self.requests_sent = 0
        self._tokenizer: Any = None
        self._generation_config: Any = None
        self._max_length: int | None = None
        self.scorer = CompletionScorer(self)

    def next_client(self) -> Any:
        """The base URLs in turn."""
        self._turn += 1
        return self.clients[self._turn % len(self.clients)]

    # ---- the tokenizer here (scoring, prompts measured in the model's tokens)
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            source = self.options.tokenizer or self.spec.name
            self._tokenizer = load_tokenizer(source, f"openai:{self.spec.name} (scoring sends token ids: "
                                                     f"give tokenizer=FOLDER)")
        return self._tokenizer

    @property
    def generation_config(self) -> Any:
        if self._generation_config is None:  # read once (its end-of-turn ids)
            self._generation_config = load_generation_config(self.options.tokenizer or self.spec.name)
        return self._generation_config

    @property
    def max_length(self) -> int:
        """The server's context length where it says (vLLM's max_model_len), else the tokenizer's."""
        if self._max_length is None:
            said = None
            try:
                for m in self.call(self.client.models.list).data:
                    if m.id == self.spec.name:
                        said = getattr(m, "max_model_len", None) or (m.model_extra or {}).get("max_model_len")
            except UsageError:
                said = None
            limit = getattr(self.tokenizer, "model_max_length", None)
            self._max_length = int(said or (limit if limit and limit < 1_000_000 else 2048))
        return self._max_length

    def score(self, requests: Sequence[ScoreRequest], exact: bool = False,
              stored: Mapping[str, Scored] | None = None) -> ScoreRun:
        return ScoreRun(self.scorer.score(requests, stored or {}, self.options.concurrency))

    def check_for(self, needs: frozenset[Capability]) -> None:
        """Before a job that scores: the probe (prompt log-probabilities echoed?)."""
        if Capability.SCORE in needs:
            self.scorer.probe()

    def info(self) -> dict[str, Any]:
        import openai

        spec = self.spec.to_dict()
        return {
            "model_spec": spec,  # holds the env var's name, never its value
            "endpoint": self.options.base_url,
            "mode": self.options.mode,
            **({"tokenizer": self.tokenizer_info(), "scoring": "logprob_token_ids" if self.scorer.by_ids
                else "echo"} if self._tokenizer is not None else {}),
            "versions": {"openai": openai.__version__},
        }

    # ---- errors
    def _fatal(self, e: Exception) -> UsageError | None:
        o = self._openai
        where = f"openai:{self.spec.name}@{self.options.base_url}"
        if isinstance(e, o.AuthenticationError):
            return UsageError(f"{where}: 401 unauthorized (set {self.options.api_key_env})")
        if isinstance(e, o.NotFoundError):
            return UsageError(f"{where}: 404 not found (model or URL)")
        if isinstance(e, o.PermissionDeniedError):
            return UsageError(f"{where}: 403 forbidden")
        if isinstance(e, o.BadRequestError):
            return UsageError(f"{where}: 400 bad request ({getattr(e, 'message', e)})")
        return None

    def call(self, fn, *args, **kwargs):
        """Retries with exponential backoff and jitter on 429, 5xx, timeouts and dropped
        connections; one-line errors for 401/403/404 and for an endpoint that stays unreachable."""
        o = self._openai
        for attempt in range(RETRIES + 1):
            try:
                self.requests_sent += 1
                return fn(*args, **kwargs)
            except Exception as e:
                fatal = self._fatal(e)
                if fatal:
                    raise fatal from None
                retryable = isinstance(e, o.RateLimitError | o.APITimeoutError | o.APIConnectionError) or (
                    isinstance(e, o.APIStatusError) and e.status_code >= 500
                )
                if not retryable:
                    raise
                if attempt == RETRIES:
                    if isinstance(e, o.APIConnectionError | o.APITimeoutError):
                        raise UsageError(f"{self.options.base_url}: unreachable ({type(e).__name__})") from None
                    raise
                time.sleep(min(8.0, 0.5 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def check(self) -> None:
        """One cheap request per base URL: any HTTP answer means the server is there
        (three tries within a second: a refused connection is not worth waiting for)."""
        for url, client in zip(self.urls, self.clients, strict=True):
            self._reach(url, client)

    def _reach(self, url: str, client: Any) -> None:
        o = self._openai
        for attempt in range(3):
            try:
                client.models.list()
                return
            except o.APIStatusError:
                return
            except (o.APIConnectionError, o.APITimeoutError):
                if attempt < 2:
                    time.sleep(0.25 * 2**attempt)
        raise UsageError(f"{url}: unreachable")

    def _messages(self, req: GenRequest, settings: GenerationSettings) -> list[dict[str, str]]:
        if req.messages:
            messages = list(req.messages)
        else:
            messages = [{"role": "user", "content": req.text or ""}]
        if settings.system and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": settings.system})
        return messages

    def _params(self, settings: GenerationSettings) -> dict[str, Any]:
        p: dict[str, Any] = {"max_tokens": settings.max_new_tokens, "seed": settings.seed}
        if settings.do_sample is False:
            p["temperature"] = 0.0
        elif settings.temperature is not None:
            p["temperature"] = settings.temperature
        if settings.top_p is not None:
            p["top_p"] = settings.top_p
        if settings.stop:
            p["stop"] = list(settings.stop)[:4]
        return p

    def complete(self, req: GenRequest, settings: GenerationSettings, **extra) -> tuple[GenResult, Any]:
        """One request; returns the result and the raw response (for logprobs)."""
        params = {**self._params(settings), **extra}
        t0 = time.perf_counter()
        if self.options.mode == "completions" or settings.raw:
            prompt = req.text if req.text is not None else "\n\n".join(m["content"] for m in req.messages)
            r = self.call(self.next_client().completions.create, model=self.spec.name, prompt=prompt, **params)
            text, finish = r.choices[0].text, r.choices[0].finish_reason
        else:
            messages = self._messages(req, settings)
            prompt = repr(messages)
            r = self.call(self.next_client().chat.completions.create, model=self.spec.name, messages=messages,
                          **params)
            text, finish = r.choices[0].message.content or "", r.choices[0].finish_reason
        usage = getattr(r, "usage", None)
        return (
            GenResult(
                key=req.key,
                output=text,
                prompt=prompt,
                prompt_tokens=getattr(usage, "prompt_tokens", None),
                output_tokens=getattr(usage, "completion_tokens", None),
                latency_s=time.perf_counter() - t0,
                finish_reason=finish or "unknown",
                settings={**params, "endpoint": self.options.base_url},
            ),
            r,
        )

    def first_token_logprobs(self, request: GenRequest, settings: GenerationSettings,
                             top: int) -> tuple[GenResult, dict[str, float] | None]:
        res, resp = self.complete(request, settings, logprobs=True, top_logprobs=top)
        try:
            first = resp.choices[0].logprobs.content[0].top_logprobs
        except (AttributeError, IndexError, TypeError):
            return res, None
        out: dict[str, float] = {}
        for t in first or []:
            out[t.token] = max(out.get(t.token, float("-inf")), t.logprob)
        return res, out or None

    def run_identity(self, work: str) -> dict[str, Any]:
        return {}  # the server's own settings are not ours to know

    def generate(self, requests: Sequence[GenRequest], settings: GenerationSettings, concurrency: int = 8,
                 skip: Callable[[str], bool] | None = None, exact: bool = False) -> Iterator[GenResult]:
        """``concurrency`` requests in flight; requests with their own settings (a routed
        benchmark's routes) one group after another."""
        todo = [r for r in requests if skip is None or not skip(r.key)]
        for group, st in by_settings(todo, settings):
            yield from self._generate(group, st, concurrency)

    def _generate(self, requests: Sequence[GenRequest], settings: GenerationSettings,
                  concurrency: int) -> Iterator[GenResult]:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = [pool.submit(self.complete, r, settings) for r in requests]
            try:
                for f in as_completed(futures):
                    yield f.result()[0]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def stream(self, messages: Sequence[dict[str, str]], settings: GenerationSettings,
               usage: dict[str, int] | None = None) -> Iterator[str]:
        req = GenRequest("chat", tuple(messages))
        extra = {"stream_options": {"include_usage": True}} if usage is not None else {}
        s = self.call(
            self.next_client().chat.completions.create,
            model=self.spec.name,
            messages=self._messages(req, settings),
            stream=True,
            **self._params(settings),
            **extra,
        )
        try:
            for chunk in s:
                if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
                if usage is not None and getattr(chunk, "usage", None):
                    usage.update(prompt_tokens=chunk.usage.prompt_tokens, completion_tokens=chunk.usage.completion_tokens)
        finally:  # left early (Ctrl-C): the server stops when the connection closes
            s.close()
