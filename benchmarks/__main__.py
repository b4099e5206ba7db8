"""``python -m benchmarks run [--seconds S] [--rounds R] [--smoke]``."""

from __future__ import annotations

import sys

from benchmarks.run import main

sys.exit(main())
