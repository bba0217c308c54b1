"""lmboard: evaluate and compare large language models."""

__version__ = "0.1.0"

from lmboard.models.registry import register_llm_infer, register_model  # noqa: E402

__all__ = ["register_model", "register_llm_infer", "__version__"]
