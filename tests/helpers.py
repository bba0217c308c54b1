"""Test helpers: paths to the real data, the CLI in a subprocess or in this process."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MMLU = DATA / "mmlu"
CMMLU = DATA / "cmmlu"
CHNSENTICORP = DATA / "chnsenticorp" / "ChnSentiCorp_htl_all.csv"
ALPACA_REF = DATA / "alpaca_eval" / "reference_gpt4_1106_preview.json"


def short_reference(folder: Path, chars: int = 300) -> Path:
    """The alpaca_eval reference, all 805 instructions, each output cut to ``chars``
    characters, written into ``folder``. A judge's prompt holds the reference's answer
    (up to several thousand characters in the real file): cut, every judged pair is a
    short forward, and the judging logic under test is the same."""
    import json

    path = folder / f"reference_{chars}.json"
    if not path.exists():
        entries = json.loads(ALPACA_REF.read_text())
        path.write_text(json.dumps([{**e, "output": e["output"][:chars]} for e in entries]))
    return path


def lmboard(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess (tests that do are marked slow)."""
    return subprocess.run(
        [sys.executable, "-m", "lmboard", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> CliResult:
    """The command line in this process: ``main(argv)`` with its output captured. It
    saves a subprocess's start (importing torch and transformers: seconds on every call);
    what a command sets for its process (environment, torch's threads, transformers'
    progress bars) is put back afterwards, so the next test starts from the same state."""
    import torch

    from lmboard.cli import main

    env, threads = dict(os.environ), torch.get_num_threads()
    bars = _transformers_bars()
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(env)
        torch.set_num_threads(threads)
        if bars is not None and "transformers" in sys.modules:
            logging = sys.modules["transformers"].utils.logging
            (logging.enable_progress_bar if bars else logging.disable_progress_bar)()
    return CliResult(code, out.getvalue(), err.getvalue())


def _transformers_bars() -> bool | None:
    if "transformers" not in sys.modules:
        return None
    return sys.modules["transformers"].utils.logging.is_progress_bar_enabled()


def check_one_line_error(r, *needles: str) -> str:
    """Exit code 2, exactly one line on stderr, no traceback; the line holds every needle."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def generate(lm, reqs, settings, skip=None, exact: bool = False, **runtime):
    """``lm.generate`` (the protocol), under other runtime options of the hf backend when
    given (batch_size, scheduler, recheck...): the same loaded model, not loaded again."""
    return (lm.with_runtime(**runtime) if runtime else lm).generate(reqs, settings, skip=skip, exact=exact)


def grouped(sets) -> list:
    """Request sets, each with its own settings, as one list of requests carrying them."""
    from dataclasses import replace

    return [replace(r, settings=st) for reqs, st in sets for r in reqs]


def continuous(lm, sets, sched=None, recheck: float = 0.0, skip=None):
    """The CPU runtime's continuous scheduler itself, with scheduler settings tests set
    (memory, out-of-memory guards, speculation)."""
    from lmboard.models.engine.continuous import continuous_groups
    from lmboard.models.engine.packed import packed_for
    from lmboard.models.engine.scheduler import SchedulerSettings

    pm, why = packed_for(lm.model, lm.device)
    assert pm is not None, why
    return continuous_groups(lm, pm, sets, skip, sched or SchedulerSettings(), recheck)


def normalized(logits: list[float]) -> list[float]:
    """Log-probabilities normalized over the given entries (an exam's letters): what two
    backends that report logits and log-probabilities respectively agree on."""
    import math

    m = max(logits)
    z = m + math.log(sum(math.exp(x - m) for x in logits))
    return [x - z for x in logits]


def exam_samples(folder: Path) -> dict:
    """An exam's samples.jsonl by (subject, index)."""
    import json

    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    return {(r["subject"], r["index"]): r for r in rows}


# Label continuations for scoring tests: Chinese and English sentiment, a short answer.
CONTINUATION_CASES = [("这家酒店很干净，服务也好。情感：", ["正面", "负面"]),
                      ("The room was dirty and loud. Sentiment:", [" positive", " negative"]),
                      ("Question: What is 2 + 2?\nAnswer:", [" 4", " 5", " four"])]


def check_continuations(lm, reference, tolerance: float) -> None:
    """``lm``'s summed continuation log-probabilities within ``tolerance`` per token of
    ``reference``'s (the hf backend, float32), with the same greedy flags."""
    from lmboard.lm import ScoreRequest, continuation_ids

    reqs = []
    for i, (text, labels) in enumerate(CONTINUATION_CASES):
        ctx, conts = continuation_ids(reference, text, labels)
        reqs.append(ScoreRequest(f"q{i}", tuple(ctx), tuple(tuple(c) for c in conts)))
    got = {s.key: s for batch in lm.score(reqs) for s in batch}
    want = {s.key: s for batch in reference.score(reqs, exact=True) for s in batch}
    for r in reqs:
        for j, cont in enumerate(r.continuations):
            assert abs(got[r.key].logprobs[j] - want[r.key].logprobs[j]) < tolerance * len(cont), (r.key, j)
        assert got[r.key].greedy == want[r.key].greedy
