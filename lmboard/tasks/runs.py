"""Run identity: the key a rerun must match to resume, and the family a run belongs to.

The key holds every setting that can change a stored result (model spec, resolved dtype,
data, prompts and templates, generation settings, the recheck margin where it applies,
batch composition where it matters) and ``RESULTS_VERSION``; a rerun that differs in
any of them is a new run. The family holds only what is evaluated and by which model
(any dtype), so a new run can say which earlier run it differs from, and how.
"""

from __future__ import annotations

import json

from lmboard.lm import ModelSpec
from lmboard.text import stable_hash
from lmboard.version import RESULTS_VERSION


def run_key(spec: ModelSpec, dtype: str | None, **settings: object) -> dict:
    return {"model": spec.canonical(), "dtype": dtype, **settings, "results_version": RESULTS_VERSION}


def run_id(prefix: str, key: dict) -> str:
    return f"{prefix}-{stable_hash(key, 12)}"


def family(kind: str, spec: ModelSpec, **what: object) -> str:
    model = {k: v for k, v in json.loads(spec.canonical()).items() if k != "dtype"}
    return stable_hash([kind, model, what], 16)


def describe(opened, run: str) -> str | None:
    """The line a CLI prints about a run it opens: resumed, or new and how it differs."""
    if opened.resumed:
        return f"resuming run {run}"
    if opened.differs_from:
        return (f"new run {run}: settings differ from run {opened.differs_from} in "
                f"{', '.join(opened.changed) or 'the results version'}")
    return None
