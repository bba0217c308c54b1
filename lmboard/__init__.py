"""lmboard: evaluate and compare large language models.

The public decorators for plugins; everything else is imported from its module.
"""

from lmboard.registry import register_alias, register_llm_infer, register_model, register_task
from lmboard.version import __version__

__all__ = ["register_model", "register_alias", "register_llm_infer", "register_task", "__version__"]
