"""The engines: scoring (prefix KV reuse, packed forward) and generation, on any LocalLM.

The engine knows the LM protocol (lmboard/lm.py), never a backend. Its public names:

    score_last, ScoreItem, EngineSettings, ScoreHooks, EngineStats   scoring.py
    score_labels, LabelItem, continuation_ids, label_logprobs        continuations.py
    generate, generate_groups, stream, generate_batched              generation.py
    render                                                           genbase.py
    GEN_RECHECK (greedy answers' float32 recheck margin)             continuous.py

Inside: scheduler.py and decode.py (continuous batching), plan.py (what runs where, pure), prefix_cache.py, recheck.py, runner.py (the
runner protocol), packed.py and kv.py (the two runners), prefix_attention.py, arch.py
(architecture facts), batching.py (token budgets, out-of-memory back-off) and
transformers_api.py (every call into transformers' internals).
"""

from lmboard.engine.continuations import LabelItem, continuation_ids, label_logprobs, score_labels
from lmboard.engine.continuous import GEN_RECHECK
from lmboard.engine.genbase import render
from lmboard.engine.generation import generate, generate_batched, generate_groups, stream
from lmboard.engine.scoring import EngineSettings, EngineStats, ScoreHooks, ScoreItem, score_last

__all__ = [
    "score_last", "ScoreItem", "EngineSettings", "ScoreHooks", "EngineStats",
    "score_labels", "LabelItem", "continuation_ids", "label_logprobs",
    "GEN_RECHECK", "generate", "generate_groups", "stream", "generate_batched", "render",
]
