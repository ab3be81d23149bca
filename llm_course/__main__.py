"""`python -m llm_course ...`: the same command line as `llm-course ...` (see llm_course/cli.py)."""

import sys

from .cli import main

sys.exit(main())
