"""Model backends behind the LM protocol (lmboard/lm.py): hf, openai_api, plugin.

spec.py turns ``backend:name,key=value`` text into a ModelSpec; registry.py loads it.
A backend module registers itself with ``@register_model``; lmboard's own are listed
as entry points in pyproject.toml, exactly like a third-party backend.
"""
