"""Real public event logs that registry packages ship, turned into our event-log format.

CDNOW (Fader, Hardie & Lee's data set for BG/NBD): every purchase of the 23,570 customers who first bought at the
CDNOW music store in the first quarter of 1997, through June 1998; shipped in the ``lifetimes`` package (the
``bench`` extra installs it; we read its data file and never import it). Dates only, one row per purchase.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pandas as pd

CDNOW_FILE = "lifetimes/datasets/CDNOW_master.txt"


def cdnow_event_log(out: Path) -> Path:
    """Write CDNOW's purchase log as ``user_id, event_time, revenue`` Parquet to ``out`` (once) and return it."""
    if out.is_file():
        return out
    try:
        source = Path(str(distribution("lifetimes").locate_file(CDNOW_FILE)))
    except PackageNotFoundError as exc:
        raise RuntimeError("the CDNOW log ships in the lifetimes package: pip install '.[bench]'") from exc
    raw = pd.read_csv(
        source, sep=r"\s+", names=["user_id", "date", "cds", "revenue"], skiprows=1, dtype={"user_id": "int64"}
    )
    events = pd.DataFrame(
        {
            "user_id": raw["user_id"],
            "event_time": pd.to_datetime(raw["date"].astype(str), format="%Y%m%d"),
            "revenue": raw["revenue"].astype("float64"),
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    events.to_parquet(out, index=False)
    return out
