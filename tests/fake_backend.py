"""A fake backend, loaded with ``--plugins tests/fake_backend.py``: no model, a byte-level
tokenizer and deterministic log-probabilities from a table. Every job that runs on it
needs nothing beyond the LM protocol (lmboard/lm.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmboard import register_model
from lmboard.lm import Capability, GenResult, Scored, ScoreRun, encode_pair

VOCAB = 256  # token i is byte i; 0 ends an answer


def table(context, token: int, seed: int = 0) -> float:
    """The logit of ``token`` after ``context``: a fixed table over the last three tokens."""
    return ((sum(context[-3:]) * 7 + token * 13 + seed) % 29) / 4.0


@dataclass(frozen=True)
class FakeOptions:
    seed: int = 0


class _Bytes:
    """A tokenizer as ``encode_pair`` calls one."""

    def __call__(self, text, add_special_tokens=True):
        return type("Encoded", (), {"input_ids": list(text.encode("utf-8"))})


@register_model("fake", options=FakeOptions)
class FakeLM:
    capabilities = frozenset({Capability.SCORE, Capability.TOKENIZE, Capability.GENERATE})
    max_length = 100_000

    def __init__(self, spec):
        self.spec, self.seed, self.calls = spec, spec.options.seed, 0

    def info(self):
        return {"model_spec": self.spec.to_dict(), "dtype": "float32", "runtime": "fake-table"}

    def check(self):
        pass

    def run_identity(self, work):
        return {}

    def encode(self, text, special=True):
        return list(text.encode("utf-8"))

    def encode_many(self, texts, special=True):
        return [self.encode(t) for t in texts]

    def encode_pair(self, context, continuation, special=True):
        return encode_pair(_Bytes(), context, continuation, special)

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")

    def has_chat_template(self):
        return True

    def render_chat(self, messages):
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    def eos_token_ids(self):
        return [0]

    def logprobs(self, context, tokens):
        """(summed log-probability of ``tokens`` after ``context``, greedy at each token)."""
        ctx, total, greedy = list(context), 0.0, True
        for t in tokens:
            row = [table(ctx, v, self.seed) for v in range(VOCAB)]
            total += row[t] - math.log(sum(math.exp(x) for x in row))
            greedy &= row[t] == max(row)
            ctx.append(t)
        return total, greedy

    def score(self, requests, exact=False, stored=None):
        def batches():
            todo = [r for r in requests if r.key not in (stored or {})]
            for i in range(0, len(todo), 8):
                out = []
                for r in todo[i:i + 8]:
                    if r.targets:
                        out.append(Scored(r.key, logits=[table(r.ids, t, self.seed) for t in r.targets]))
                    else:
                        lp = [self.logprobs(r.ids, c) for c in r.continuations]
                        out.append(Scored(r.key, logprobs=[x for x, _ in lp], greedy=[g for _, g in lp]))
                self.calls += len(out)
                yield out
            return {"requests": len(todo)}

        return ScoreRun(batches())

    def generate(self, requests, settings, concurrency=8, skip=None, exact=False):
        for r in requests:
            if skip is not None and skip(r.key):
                continue
            st = r.settings or settings
            prompt = r.text if r.text is not None else self.render_chat(r.messages)
            ctx, new = self.encode(prompt), []
            for _ in range(min(st.max_new_tokens, 6)):
                t = max(range(48, 58), key=lambda v: table(ctx, v, self.seed))  # a digit: answers parse
                new.append(t)
                ctx.append(t)
            yield GenResult(r.key, self.decode(new), prompt, None, len(new), 0.0, "length", {})
