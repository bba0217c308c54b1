"""The judge role: any model spec, configured apart from the models under test.

Every judgment is cached in the store under a key made of the judge spec, the prompt
template hash, the language, the instruction, both outputs and their order: a rerun
judges only what is missing, and a killed run loses nothing already judged.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from lmboard.faults import fault
from lmboard.judge import prompts
from lmboard.lm import (
    LM,
    Capability,
    GeneratingLM,
    GenerationSettings,
    GenRequest,
    LogprobLM,
    ModelSpec,
    ScoreRequest,
    ScoringLM,
    capability_error,
)
from lmboard.store import Store
from lmboard.text import stable_hash
from lmboard.version import RESULTS_VERSION

CHUNK = 64  # judgments made and stored together


@dataclass(frozen=True)
class JudgeSettings:
    spec: ModelSpec
    mode: str = "pairwise"  # pairwise | single
    lang: str = "auto"  # auto | en | zh
    seed: int = 0
    both_orders: bool = False
    concurrency: int = 8


@dataclass(frozen=True)
class Comparison:
    generator: str
    instruction: str
    output: str  # the model under test
    reference: str | None  # the reference answer (pairwise: required)


def model_first(seed: int, instruction: str) -> bool:
    """The recorded, seeded coin that puts the model's output first or second."""
    return random.Random(f"{seed}:{instruction}").random() < 0.5


class Judge:
    def __init__(self, lm: LM, settings: JudgeSettings, store: Store):
        self.lm, self.settings, self.store = lm, settings, store
        self.template = prompts.judge_template_hash(settings.mode)
        self.dtype = lm.info().get("dtype")  # a local judge's resolved dtype moves its probabilities
        self.calls = 0  # requests actually sent to the judge (cache misses)
        # label probabilities read from the judge's own scores (a local model), not parsed from text
        self.scores = {Capability.SCORE, Capability.TOKENIZE} <= lm.capabilities

    # ---- cache
    def key(self, c: Comparison, first_is_model: bool, lang: str) -> str:
        return stable_hash([self.settings.spec.canonical(), self.settings.mode, self.template, lang,
                            c.instruction, c.reference, c.output, first_is_model]
                           + ([self.dtype, RESULTS_VERSION] if self.dtype else []), 32)

    def jobs(self, comparisons: Sequence[Comparison]) -> list[tuple[int, bool, str, str]]:
        """(comparison index, first_is_model, lang, cache key) of every judgment needed."""
        jobs = []
        for n, c in enumerate(comparisons):
            lang = prompts.choose_lang(c.instruction, self.settings.lang)
            if self.settings.mode == "single":
                jobs.append((n, True, lang, self.key(c, True, lang)))
                continue
            first = model_first(self.settings.seed, c.instruction)
            orders = [first, not first] if self.settings.both_orders else [first]
            jobs += [(n, o, lang, self.key(c, o, lang)) for o in orders]
        return jobs

    def run(self, comparisons: Sequence[Comparison], progress: Callable[[int, int], None] | None = None) -> list[dict]:
        """One record per comparison: preference (or grade), validity, consistency."""
        jobs = self.jobs(comparisons)
        with self.store.run_lock("judge-" + stable_hash(sorted(j[3] for j in jobs))):
            cached = self._judge_missing(comparisons, jobs, progress)
        return [self._combine(c, [cached[j[3]] for j in jobs if j[0] == n]) for n, c in enumerate(comparisons)]

    def _judge_missing(self, comparisons, jobs, progress) -> dict[str, dict]:
        """Judge in chunks planned over every job, each stored as one transaction. A local
        judge runs a chunk with any judgment missing whole (its batches, and so its
        probabilities, are an uninterrupted run's); an endpoint is sent only what is missing."""
        cached = {k: v for k in {j[3] for j in jobs} if (v := self.store.get_judgment(k)) is not None}
        done = sum(1 for j in jobs if j[3] in cached)
        if progress:
            progress(done, len(jobs))
        for start in range(0, len(jobs), CHUNK):
            chunk = jobs[start : start + CHUNK]
            missing = [j for j in chunk if j[3] not in cached]
            if not missing:
                continue
            run = chunk if self.scores else missing
            results = self._judge([(comparisons[n], o, lang) for n, o, lang, _ in run])
            fault("judge.chunk")
            new = [(j, r) for j, r in zip(run, results, strict=True) if j[3] not in cached]
            self.store.put_judgments([(j[3], self.settings.spec.canonical(), r) for j, r in new])
            cached.update({j[3]: r for j, r in new})
            done += len(missing)
            if progress:
                progress(done, len(jobs))
        return cached

    def _combine(self, c: Comparison, parts: list[dict]) -> dict:
        valid = [p for p in parts if p["value"] is not None]
        rec = {"generator": c.generator, "instruction": c.instruction, "judgments": parts}
        if self.settings.mode == "single":
            rec["score"] = valid[0]["value"] if valid else None
            return rec
        rec["preference"] = sum(p["value"] for p in valid) / len(valid) if valid else None
        if len(parts) == 2 and len(valid) == 2:
            side = [round(p["value"] * 2) / 2 for p in valid]  # 1, 1.5 or 2
            rec["consistent"] = side[0] == side[1]
        return rec

    # ---- the judge itself
    def _judge(self, jobs: list[tuple[Comparison, bool, str]]) -> list[dict]:
        if self.settings.mode == "pairwise" and self.scores:
            return self._pairwise_local(jobs)
        with ThreadPoolExecutor(max_workers=max(1, self.settings.concurrency)) as pool:
            return list(pool.map(lambda j: self._one_by_text(*j), jobs))

    def _messages(self, c: Comparison, first_is_model: bool, lang: str) -> list[dict[str, str]]:
        if self.settings.mode == "single":
            return prompts.single_messages(c.instruction, c.output, c.reference, lang)
        a, b = (c.output, c.reference) if first_is_model else (c.reference, c.output)
        return prompts.pairwise_messages(c.instruction, a or "", b or "", lang)

    def _pairwise_local(self, jobs) -> list[dict]:
        """The next-token logits of "m" and "M", from the judge's scores."""
        lm: ScoringLM = self.lm  # type: ignore[assignment]
        texts = [lm.render_chat(self._messages(*j)) for j in jobs]
        targets = tuple(lm.encode_pair(texts[0], label, special=False)[1][0] for label in prompts.LABELS)
        got = {r.key: r.logits for batch in lm.score([ScoreRequest(str(i), tuple(lm.encode(t, special=False)),
                                                                    targets=targets) for i, t in enumerate(texts)])
               for r in batch}
        self.calls += len(jobs)
        out = []
        for i, (_, first_is_model, _) in enumerate(jobs):
            lm_, lM = got[str(i)]
            p_second = 1 / (1 + math.exp(lm_ - lM))
            p_model = (1 - p_second) if first_is_model else p_second
            out.append({"value": 1 + p_model, "source": "logits", "first_is_model": first_is_model,
                        "p_label_M": p_second})
        return out

    def _one_by_text(self, c: Comparison, first_is_model: bool, lang: str) -> dict:
        """An endpoint or plugin: top logprobs where given, else the parsed answer;
        an unparsable answer is retried once, then recorded as invalid."""
        single = self.settings.mode == "single"
        settings = GenerationSettings(max_new_tokens=512 if single else 4, do_sample=False, seed=self.settings.seed)
        req = GenRequest("judge", tuple(self._messages(c, first_is_model, lang)))
        raw = ""
        for attempt in range(2):
            # the retry samples (a greedy retry would repeat the same unparsable answer)
            s = settings if attempt == 0 else replace(settings, do_sample=True, temperature=0.7,
                                                      seed=self.settings.seed + 1)
            self.calls += 1
            if not single and Capability.LOGPROBS in self.lm.capabilities:
                lp: LogprobLM = self.lm  # type: ignore[assignment]
                res, top = lp.first_token_logprobs(req, s, 5)
                raw = res.output
                p = _label_probs(top)
                if p is not None:
                    p_model = (1 - p) if first_is_model else p
                    return {"value": 1 + p_model, "source": "logprobs", "first_is_model": first_is_model, "raw": raw}
            elif Capability.GENERATE in self.lm.capabilities:
                gen: GeneratingLM = self.lm  # type: ignore[assignment]
                raw = next(iter(gen.generate([req], s))).output
            else:
                raise capability_error(self.lm.spec, self.lm.capabilities, Capability.GENERATE, "a judge")
            if single:
                g = prompts.parse_grade(raw)
                if g is not None:
                    return {"value": g, "source": "parsed", "raw": raw[-300:]}
            else:
                label = prompts.parse_label(raw)
                if label is not None:
                    second = label == "M"
                    model_won = second != first_is_model
                    return {"value": 2.0 if model_won else 1.0, "source": "parsed", "first_is_model": first_is_model,
                            "raw": raw}
        return {"value": None, "source": "invalid", "first_is_model": first_is_model, "raw": raw[-300:]}


def _label_probs(top: dict[str, float] | None) -> float | None:
    """P("M") / (P("m") + P("M")) from the first token's top logprobs, if the server gave them."""
    probs = {"m": 0.0, "M": 0.0}
    for token, logprob in (top or {}).items():
        tok = token.strip().strip("`'\"")
        if tok in probs:
            probs[tok] += math.exp(logprob)
    total = probs["m"] + probs["M"]
    return probs["M"] / total if total > 0 else None
