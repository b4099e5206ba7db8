"""``python -m benchmarks run [...]`` (speed, side by side) or ``python -m benchmarks reliability [--full]``."""

from __future__ import annotations

import sys

if len(sys.argv) > 1 and sys.argv[1] == "reliability":
    from benchmarks.reliability import main as reliability_main

    sys.exit(reliability_main(sys.argv[2:]))

from benchmarks.run import main

sys.exit(main(sys.argv[1:]))
