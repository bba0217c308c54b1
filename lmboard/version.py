"""lmboard's version (its own module: every layer may read it without importing the package)."""

__version__ = "0.1.0"

# Bumped when a change moves stored results (a prompt, a parser, the engine's numbers):
# part of every run's identity, so old stored results are never mixed with new ones.
RESULTS_VERSION = 2  # 2: bfloat16 close calls rechecked on the float32 model, by a calibrated margin
