"""`python -m lmboard`: the command line."""

import sys

from lmboard.cli import main

sys.exit(main())
