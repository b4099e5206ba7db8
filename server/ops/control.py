"""The control record: which model every worker of ``--workers N`` must serve, in one totally ordered file.

``model-control.json`` in the shared metrics folder holds the latest swap asked for: its generation, the model's
path and sha256, and ``force``. Writers (an admin swap on any worker, the supervisor's SIGHUP) read, increment and
write it under an exclusive ``flock`` on a lock file beside it, so no two swaps ever get the same generation and
the order of generations is the order the swaps were asked in. **The highest generation wins**: every worker serves
the record's model, a worker that starts (or is restarted by the supervisor) included, and a worker that finishes
an older swap after a newer record appeared swaps again.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

CONTROL_FILE = "model-control.json"
LOCK_FILE = ".model-control.lock"


@dataclass(frozen=True, slots=True)
class Control:
    """One swap asked of every worker."""

    generation: int
    path: Path
    sha256: str
    force: bool


def write_control(folder: Path, path: Path, sha256: str, force: bool) -> Control:
    """Ask every worker to serve ``path`` (whose sha256 is ``sha256``): the next generation, under the lock."""
    with open(folder / LOCK_FILE, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, on any exit
        current = read_control(folder)
        control = Control((current.generation if current else 0) + 1, path, sha256, force)
        record = {
            "generation": control.generation,
            "path": str(path),
            "sha256": sha256,
            "force": force,
            "time": time.time(),
        }
        target = folder / CONTROL_FILE
        temporary = target.with_name(f".{CONTROL_FILE}.{os.getpid()}")
        temporary.write_bytes(orjson.dumps(record))
        os.replace(temporary, target)
    return control


def read_control(folder: Path | None) -> Control | None:
    """The latest swap asked for, ``None`` without one (or without a folder: one worker needs none)."""
    if folder is None:
        return None
    try:
        record = orjson.loads((folder / CONTROL_FILE).read_bytes())
        return Control(int(record["generation"]), Path(record["path"]), str(record["sha256"]), bool(record["force"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def clear_folder(folder: Path) -> None:
    """Remove what an earlier run left in a reused metrics folder: its workers' snapshots and its control record
    (a new run serves its configured model, and counts from zero)."""
    for stale in [*folder.glob("worker-*.json*"), folder / CONTROL_FILE, *folder.glob(f".{CONTROL_FILE}.*")]:
        stale.unlink(missing_ok=True)
