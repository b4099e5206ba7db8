"""A product event log in which churn emerges from behaviour over time.

Each user has a latent engagement level, a sign-up day and a churn day drawn from an engagement-dependent
hazard. Users drift away before they stop, as in real logs: over the weeks before churn (two to seven, per user)
the gaps between active days grow and sessions thin out; after churn there is no activity at all. Active days hold
sessions, sessions hold events, and some events are purchases with revenue. The label is never drawn from the
features: the training code has to recover churn from what users did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from common.io import atomic_path

logger = logging.getLogger(__name__)

SIM_START = np.datetime64("2026-01-01T00:00:00", "us")
EVENT_TYPES = ("page_view", "click", "search", "add_to_cart", "purchase")
_PURCHASE = EVENT_TYPES.index("purchase")
_USERS_PER_CHUNK = 50_000  # bounds memory: ~5M events per chunk at the default behaviour
_DAY_US = 86_400 * 1_000_000
_FADE_DAYS = (14, 50)  # activity declines over a per-user number of days in this range before churn
_PAUSE_DAYS = (21, 63)  # how long a pausing user stays away
_FADE_FLOOR = 0.05  # activity just before churn, relative to the user's usual level


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    users: int = 5000
    days: int = 90
    seed: int = 7
    sessions_scale: float = 1.0  # < 1 gives fewer sessions per user (a drifted population)
    revenue_scale: float = 1.0  # multiplies every purchase's revenue (prices or currency changed: drift in one feature)
    pause_share: float = 0.0  # users who take one 3-9 week break and come back (seasonal users: a new churn pattern)
    engagement_shift: float = (
        0.0  # moves every user's engagement (log scale): a covariate shift, same behaviour -> churn
    )


def simulate_chunk(
    rng: np.random.Generator, first_user: int, first_session: int, n_users: int, config: SimulationConfig
) -> dict[str, npt.NDArray]:
    """Events of users ``first_user ..`` as column arrays; session ids count up from ``first_session``."""
    days = config.days
    engagement = rng.lognormal(mean=config.engagement_shift, sigma=0.7, size=n_users)
    existing = rng.random(n_users) < 0.5
    signup_day = np.where(existing, 0, rng.integers(0, max(1, int(days * 0.6)), size=n_users))
    # Churn hazard falls with engagement: mean lifetime grows from weeks to many months.
    lifetime = rng.exponential(scale=70.0 * engagement**1.2)
    churn_day = signup_day + lifetime
    day = np.arange(days, dtype=np.float64)[None, :]
    paused = np.zeros((n_users, days), dtype=bool)
    if config.pause_share > 0:  # drawn only when asked for: the default log stays the same, seed for seed
        pause_start = rng.uniform(0, days, size=n_users)
        pause_days = rng.uniform(*_PAUSE_DAYS, size=n_users) * (rng.random(n_users) < config.pause_share)
        churn_day = churn_day + pause_days  # a break does not use up the user's lifetime
        paused = (day >= pause_start[:, None]) & (day < (pause_start + pause_days)[:, None])

    fade_days = rng.uniform(*_FADE_DAYS, size=n_users)
    fade = np.clip((churn_day[:, None] - day) / fade_days[:, None], _FADE_FLOOR, 1.0) ** 1.5
    alive = (day >= signup_day[:, None]) & (day < churn_day[:, None]) & ~paused
    p_active = np.clip(0.12 * engagement, 0.02, 0.85)[:, None] * fade
    active = alive & (rng.random((n_users, days)) < p_active)
    user_idx, active_day = np.nonzero(active)

    # Sessions on each active day.
    sess_per_day = 1 + rng.poisson(0.5 * engagement[user_idx] * config.sessions_scale * fade[user_idx, active_day])
    s_user = np.repeat(user_idx, sess_per_day)
    s_day = np.repeat(active_day, sess_per_day)
    s_start_us = rng.integers(6 * 3600, 23 * 3600, size=s_user.size) * 1_000_000
    s_fade = fade[s_user, s_day]
    events_per_session = 1 + rng.poisson(1.5 + 2.0 * engagement[s_user] * s_fade)

    # Events inside a session: exponential gaps from the session's start.
    e_session = np.repeat(np.arange(s_user.size), events_per_session)
    gaps = rng.exponential(40.0, size=e_session.size) * 1_000_000
    gaps[np.r_[0, np.cumsum(events_per_session)[:-1]]] = 0.0  # the first event opens the session
    offsets = np.cumsum(gaps)
    offsets -= np.repeat(offsets[np.r_[0, np.cumsum(events_per_session)[:-1]]], events_per_session)
    e_user = s_user[e_session]
    event_time = (
        SIM_START.astype(np.int64)
        + s_day[e_session].astype(np.int64) * _DAY_US
        + s_start_us[e_session]
        + offsets.astype(np.int64)
    )

    p_purchase = 0.015 + 0.03 * engagement[e_user] / (1.0 + engagement[e_user])
    is_purchase = rng.random(e_session.size) < p_purchase
    event_type = np.where(is_purchase, _PURCHASE, rng.integers(0, _PURCHASE, size=e_session.size))
    revenue = np.where(
        is_purchase, np.round(rng.lognormal(3.0, 0.6, size=e_session.size) * config.revenue_scale, 2), 0.0
    )

    order = np.lexsort((event_time, e_user))
    return {
        "user_id": (first_user + e_user[order]).astype(np.int64),
        "event_time": event_time[order],
        "session_id": (first_session + e_session[order]).astype(np.int64),
        "event_type": event_type[order].astype(np.int8),
        "revenue": revenue[order],
    }


def _to_table(columns: dict[str, npt.NDArray]) -> pa.Table:
    event_type = pa.DictionaryArray.from_arrays(pa.array(columns["event_type"]), pa.array(EVENT_TYPES))
    return pa.table(
        {
            "user_id": pa.array(columns["user_id"]),
            "event_time": pa.array(columns["event_time"].astype("datetime64[us]")),
            "session_id": pa.array(columns["session_id"]),
            "event_type": event_type,
            "revenue": pa.array(columns["revenue"]),
        }
    )


def simulate_events(config: SimulationConfig, out: Path) -> int:
    """Write the simulated event log to ``out`` (Parquet, or CSV when the name ends in .csv).

    Returns
    -------
    n_events : int
        Number of events written.
    """
    if config.users < 1 or config.days < 1:
        raise ValueError(f"--users and --days must be positive (got {config.users} and {config.days})")
    if not 0.0 <= config.pause_share <= 1.0:
        raise ValueError(f"--pause-share must be between 0 and 1 (got {config.pause_share})")
    rng = np.random.default_rng(config.seed)
    as_csv = out.suffix.lower() == ".csv"
    n_events = n_sessions = 0
    with atomic_path(out) as tmp:
        writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
        try:
            for first in range(0, config.users, _USERS_PER_CHUNK):
                n = min(_USERS_PER_CHUNK, config.users - first)
                columns = simulate_chunk(rng, first, n_sessions, n, config)
                n_sessions = int(columns["session_id"].max(initial=n_sessions - 1)) + 1
                table = _to_table(columns)
                if as_csv:
                    table = table.set_column(3, "event_type", table["event_type"].cast(pa.string()))
                if writer is None:
                    writer = pa_csv.CSVWriter(tmp, table.schema) if as_csv else pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                n_events += table.num_rows
                logger.info("simulate users=%d/%d events=%d", first + n, config.users, n_events)
        finally:
            if writer is not None:
                writer.close()
    return n_events
