"""The scoring engine's counters and its shared token budget."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EngineStats:
    items: int = 0
    batches: int = 0
    prefix_groups: int = 0
    prefix_tokens_reused: int = 0  # tokens not run compared with running every full prompt
    tokens_run: int = 0  # tokens actually run through the model (incl. prefixes once)
    padded_tokens: int = 0
    boundary_trimmed: int = 0  # items whose shared part was cut by a boundary merge
    fallbacks: int = 0  # items run as full prompts
    oom_backoffs: int = 0
    batch_tokens: int = 0
    prefix_reuse: bool = True
    forward: str = ""  # packed or transformers
    recheck: str = "off"  # off, fixed (a given margin) or calibrated (engine/recheck.py)
    recheck_margin: float | None = 0.0  # close calls (top-2 target logits closer than this) rerun in float32 (the last)
    recheck_bound: float = 0.0  # the largest bfloat16-vs-float32 gap error measured
    calibration: int = 0  # calibration questions (rescored whatever their gap)
    rechecked: int = 0
    # tokens the float32 twin ran (with a recheck: every prefix, and the rescored
    # questions), also counted in tokens_run
    float32_tokens: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Budget:
    """The token budget of a run's batches, halved (and counted) on out-of-memory."""

    def __init__(self, tokens: int, stats: EngineStats):
        self.tokens, self.stats = tokens, stats
        stats.batch_tokens = tokens

    def halve(self) -> None:
        self.tokens = max(1, self.tokens // 2)
        self.stats.batch_tokens = self.tokens
        self.stats.oom_backoffs += 1
