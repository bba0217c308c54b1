"""Model backends behind one small interface (see base.py)."""

from lmboard.models.registry import load_model, register_llm_infer, register_model

__all__ = ["load_model", "register_model", "register_llm_infer"]
