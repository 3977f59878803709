"""Run the fuzzer standalone: .venv/bin/python -m tests.fuzz --help (tests/fuzz/run.py)."""

import sys

from tests.fuzz.run import main

sys.exit(main())
