"""What the engine reads of the model it runs: the hf backend's loaded transformers model.

The engine is the hf backend's runtime (lmboard/models/hf.py); nothing outside models/
imports it. This protocol is the whole of what it reads of the backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from lmboard.lm import ModelSpec


class LocalLM(Protocol):
    """A transformers causal LM in this process, with its tokenizer."""

    spec: ModelSpec
    model: Any  # a transformers causal LM (torch.nn.Module); reading it loads the weights
    config: Any  # its config, read without loading them
    generation_config: Any  # its generation config, read without loading them
    weights_loaded: bool
    tokenizer: Any
    device: Any  # torch.device
    dtype_name: str
    max_length: int
    # The checkpoint's float32 parameters by name, kept when the model computes in a
    # reduced dtype over weights stored wider (a GGUF's dequantized blocks): the float32
    # recheck runs the float32 model on them. None: the weights upcast are exact (or
    # a float32 copy did not fit).
    exact_weights: dict[str, Any] | None

    def encode(self, text: str, special: bool = True) -> list[int]: ...

    def encode_pair(self, context: str, continuation: str, special: bool = True) -> tuple[list[int], list[int]]: ...

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str: ...

    def eos_token_ids(self) -> list[int]: ...
