"""Loading models: a spec's backend from the registry, and plugin files named on the command line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from lmboard.errors import UsageError
from lmboard.lm import LM, Capability, ModelSpec, capability_error
from lmboard.registry import BACKENDS


def backend_capabilities(spec: ModelSpec) -> frozenset[Capability]:
    """What the spec's backend declares it can do (known before anything loads): its
    ``capabilities_for(options)`` where the options decide (an endpoint's mode), else its
    ``capabilities``."""
    factory = BACKENDS.get(spec.backend)
    per_options = getattr(factory, "capabilities_for", None)
    if per_options is not None:
        return frozenset(per_options(spec.options))
    return frozenset(getattr(factory, "capabilities", {Capability.GENERATE}))


def require_backend(spec: ModelSpec, capability: Capability, job: str) -> None:
    """Before loading: a one-line error if the spec's backend cannot serve ``job`` (with
    the backend's ``capability_hint`` where it has one)."""
    caps = backend_capabilities(spec)
    if capability not in caps:
        hint = getattr(BACKENDS.get(spec.backend), "capability_hint", None)
        raise capability_error(spec, caps, capability, job, hint(capability) if hint else "")


# What each capability promises (lmboard/lm.py), checked when a backend loads.
METHODS = {
    Capability.SCORE: ("score",),
    Capability.GENERATE: ("generate",),
    Capability.STREAM: ("stream",),
    Capability.LOGPROBS: ("first_token_logprobs",),
    Capability.TOKENIZE: ("encode", "encode_many", "encode_pair", "decode", "has_chat_template", "render_chat",
                          "eos_token_ids"),
    Capability.TIMING: ("prefill", "decode_exactly", "plain_token_ids", "synchronize", "memory"),
    Capability.TRAIN: ("trainable",),
}


def load_model(spec: ModelSpec) -> LM:
    """The spec's backend, loaded; a backend (a plugin's, say) that lacks a method its
    capabilities promise is a one-line error, not an AttributeError in the middle of a job.
    (The TOKENIZE methods include ``max_length``'s readers: a property is fine.)"""
    lm = BACKENDS.get(spec.backend)(spec)
    need = ["info", "check", "run_identity"] + [m for c in lm.capabilities for m in METHODS.get(c, ())]
    missing = [m for m in need if not callable(getattr(lm, m, None))]
    if missing:
        raise UsageError(f"the {spec.backend} backend ({type(lm).__module__}) does not implement "
                         f"{', '.join(missing)} (the LM protocol: lmboard/lm.py)")
    return lm


def load_plugin_paths(paths: list[Path]) -> None:
    """Import the .py files (or folders of them) the user named with --plugins."""
    for p in map(Path, paths):
        if not p.exists():
            raise UsageError(f"--plugins: {p}: no such file or folder")
        for f in sorted(p.glob("*.py")) if p.is_dir() else [p]:
            mod_name = f"lmboard_plugin_{abs(hash(str(f.resolve())))}"
            if mod_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(mod_name, f)
            if spec is None or spec.loader is None:
                raise UsageError(f"--plugins: {f}: not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                raise UsageError(f"--plugins: {f}: {type(e).__name__}: {e}") from e
