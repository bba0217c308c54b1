"""`python -m lmboard`: the command line."""

from lmboard.cli import entry

entry()
