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

from common.io import atomic_path

CONTROL_FILE = "model-control.json"
PINNED_PREFIX = "served-"  # the served model's verified bytes, pinned for workers started later
SHADOW_CONTROL_FILE = "shadow-control.json"  # the same, for the shadow model (an empty path: no shadow)
LOCK_FILE = ".model-control.lock"


@dataclass(frozen=True, slots=True)
class Control:
    """One swap asked of every worker."""

    generation: int
    path: Path
    sha256: str
    force: bool
    sample: float = 0.0  # the shadow's share of requests (shadow records only)


def write_control(
    folder: Path, path: Path, sha256: str, force: bool, sample: float = 0.0, name: str = CONTROL_FILE
) -> Control:
    """Ask every worker to serve ``path`` (whose sha256 is ``sha256``): the next generation, under the lock."""
    with open(folder / LOCK_FILE, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, on any exit
        current = read_control(folder, name)
        control = Control((current.generation if current else 0) + 1, path, sha256, force, sample)
        record = {
            "generation": control.generation,
            "path": str(path),
            "sha256": sha256,
            "force": force,
            "sample": sample,
            "time": time.time(),
        }
        target = folder / name
        temporary = target.with_name(f".{name}.{os.getpid()}")
        temporary.write_bytes(orjson.dumps(record))
        os.replace(temporary, target)
    return control


def read_control(folder: Path | None, name: str = CONTROL_FILE) -> Control | None:
    """The latest swap asked for, ``None`` without one (or without a folder: one worker needs none)."""
    if folder is None:
        return None
    try:
        record = orjson.loads((folder / name).read_bytes())
        return Control(
            int(record["generation"]),
            Path(record["path"]),
            str(record["sha256"]),
            bool(record["force"]),
            float(record.get("sample", 0.0)),
        )
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def clear_folder(folder: Path) -> None:
    """Remove what an earlier run left in a reused metrics folder: its workers' snapshots and its control record
    (a new run serves its configured model, and counts from zero)."""
    records = [folder / CONTROL_FILE, folder / SHADOW_CONTROL_FILE, *folder.glob(".*-control.json.*")]
    for stale in [*folder.glob("worker-*.json*"), *folder.glob(f"{PINNED_PREFIX}*.onnx"), *records]:
        stale.unlink(missing_ok=True)


def pin_model(folder: Path, data: bytes, sha256: str) -> Control:
    """The verified model's bytes copied into the folder under their sha256, and the control record naming that
    copy: a worker started later (the supervisor's replacement for one that died) loads exactly what every other
    worker loaded, whatever is at the configured path by then (review M2)."""
    copy = folder / f"{PINNED_PREFIX}{sha256[:16]}.onnx"
    with atomic_path(copy) as tmp:
        tmp.write_bytes(data)
    return write_control(folder, copy, sha256, force=False)
