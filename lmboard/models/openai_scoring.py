"""Scoring on an OpenAI-compatible server's ``/v1/completions`` (``openai:...,mode=completions``).

Prompts are token ids (tokenized here with the model's tokenizer, so a context and its
continuation meet where the job cut them), as lm-evaluation-harness's local-completions
sends them:

- a continuation: ``echo=true, logprobs=1, max_tokens=1`` on context + continuation; the
  continuation's log-probability is the sum of the echoed prompt's log-probabilities
  from the context's length to the prompt's end (the generated token is not counted),
  greedy where each echoed token is the top one at its position;
- letters read at one position (an exam's answer letters): where the server takes
  vLLM's ``logprob_token_ids``, one request per question (the letters' log-probabilities
  at the prompt's last position, raw); elsewhere one echoed request per letter.

A probe at start-up asks for both. A server that does not echo the prompt's
log-probabilities (llama.cpp's ignores ``echo``) cannot score: that is a one-line error
naming the alternatives, never a score made of the generated token's log-probability.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from lmboard.errors import UsageError
from lmboard.lm import Scored, ScoreRequest

CHUNK = 64  # results handed to the job (one store transaction) at a time
PROBE_TEXT = ("The capital of France is", " Paris")


class CompletionScorer:
    """Scores ScoreRequests on ``model``'s servers (requests spread over its base URLs)."""

    def __init__(self, model: Any):
        self.model = model
        self.by_ids: bool | None = None  # the server takes logprob_token_ids (None: not probed yet)
        self._lock = threading.Lock()
        self._next = 0
        self.per_url = dict.fromkeys(model.urls, 0)  # scoring requests sent to each base URL

    def _client(self) -> Any:
        with self._lock:
            i = self._next % len(self.model.clients)
            self._next += 1
            self.per_url[self.model.urls[i]] += 1
            return self.model.clients[i]

    def _create(self, prompt: list[int], client: Any = None, **params: Any) -> Any:
        m = self.model
        client = client or self._client()
        extra = {"return_tokens_as_token_ids": True, **params.pop("extra_body", {})}
        r = m.call(client.completions.create, model=m.spec.name, prompt=prompt, max_tokens=1, temperature=0.0,
                   extra_body=extra, **params)
        return r.choices[0].logprobs

    # ---- the probe
    def probe(self) -> None:
        """Each base URL must echo prompt log-probabilities; whether it reads ids is noted."""
        m = self.model
        ctx, cont = m.encode_pair(*PROBE_TEXT)
        for url, client in zip(m.urls, m.clients, strict=True):
            why = "it ignores echo=true, as llama.cpp's server does"
            try:
                lp = self._create(ctx + cont, client, echo=True, logprobs=1)
                values = list(getattr(lp, "token_logprobs", None) or [])
            except UsageError as e:  # 400: echo or logprobs refused
                values, why = [], str(e).rpartition(": ")[2]
            n = len(ctx) + len(cont)
            if len(values) < n or any(v is None for v in values[1:n]):
                raise UsageError(
                    f"openai:{m.spec.name}@{url}: the server returns no log-probabilities of the prompt "
                    f"({why}), so it cannot score: use a server that does (vLLM, SGLang), or answer by "
                    f"generation (--mc-by generate, --by generate)")
            targets = list(dict.fromkeys([cont[0], *ctx[-2:]]))
            try:
                got = self._create(ctx, client, logprobs=len(targets),
                                   extra_body={"logprob_token_ids": targets}).top_logprobs[0]
                by_ids = all(f"token_id:{t}" in got for t in targets)
            except UsageError:  # 400: the server does not know the parameter
                by_ids = False
            self.by_ids = by_ids if self.by_ids is None else self.by_ids and by_ids

    # ---- scoring
    def score(self, requests: Sequence[ScoreRequest], stored: Mapping[str, Scored], concurrency: int):
        if self.by_ids is None:
            self.probe()
        done = {k for k, s in stored.items() if s.final}
        todo = [r for r in requests if r.key not in done]
        ready: list[Scored] = []
        for scored in self._all(todo, concurrency):
            ready.append(scored)
            if len(ready) >= CHUNK:
                yield ready
                ready = []
        if ready:
            yield ready
        return {"requests": sum(self.per_url.values()), "requests_per_url": dict(self.per_url)}

    def _all(self, requests: list[ScoreRequest], concurrency: int) -> Iterator[Scored]:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = [pool.submit(self._one, r) for r in requests]
            try:
                for f in as_completed(futures):
                    yield f.result()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def _one(self, r: ScoreRequest) -> Scored:
        ids = list(r.ids)
        logits = None
        if r.targets and self.by_ids:
            top = self._create(ids, logprobs=len(r.targets),
                               extra_body={"logprob_token_ids": list(r.targets)}).top_logprobs[0]
            logits = [float(top[f"token_id:{t}"]) for t in r.targets]
        elif r.targets:
            logits = [self._continuation(ids, [t])[0] for t in r.targets]
        pairs = [self._continuation(ids, list(c)) for c in r.continuations]
        return Scored(r.key, logits=logits, logprobs=[p[0] for p in pairs] or None,
                      greedy=[p[1] for p in pairs] or None)

    def _continuation(self, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
        """(summed log-probability of ``cont`` after ``ctx``, whether each of its tokens was the top one)."""
        lp = self._create(ctx + cont, echo=True, logprobs=1)
        a, b = len(ctx), len(ctx) + len(cont)
        values, tokens, tops = lp.token_logprobs, lp.tokens, lp.top_logprobs
        if len(values) < b or any(v is None for v in values[a:b]):
            raise UsageError(f"openai:{self.model.spec.name}: the server stopped echoing prompt log-probabilities")
        greedy = all(t is not None and max(t, key=t.get) == tok for t, tok in zip(tops[a:b], tokens[a:b], strict=True))
        return float(sum(values[a:b])), greedy
