"""Writing the landing zone: `simulate` runs the world day by day into a lake.

All writes go through the lake's own `write_table`, `write_bytes` and `write_marker`, so the
landing zone has the lake's file names and atomic replacement, locally and on S3.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from vq_assets.core.labels.daily_stats import TABLE as DAILY_STATS_TABLE
from vq_assets.core.lake.store import PART_FILE, SUCCESS_MARKER, Lake

from .render import cover_jpeg, encode_planes, render_planes
from .tables import (
    DAILY_STATS_COUNTERS,
    daily_stats_table,
    events_table,
    truth_table,
    videos_table,
)
from .world import (
    STREAM_MEDIA,
    TAIL_DAYS,
    TOPICS,
    Creators,
    DayVideos,
    Viewers,
    day_start_us,
    make_day,
    stream_rng,
)


@dataclass
class SimulationSummary:
    """What `simulate` wrote; `paths` are paths inside the lake's filesystem, in write order.

    `events` counts the simulated plays, whether landed as watch events or rolled up into
    `daily_stats_rows` (with `counters`)."""

    days: int
    videos: int
    events: int
    paths: list[str] = field(default_factory=list)
    daily_stats_rows: int = 0


def simulate(
    lake: Lake,
    start: dt.date,
    days: int,
    videos_per_day: int,
    seed: int = 0,
    *,
    mean_plays: float = 60.0,
    media: bool = True,
    origin: dt.date | None = None,
    counters: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SimulationSummary:
    """Write `days` landing days from `start` into `lake`: videos, watch events, media and truth.

    `origin` is the day the simulated platform opens (default `start`); a later `start` with the
    same `origin` writes exactly the days a longer run from `origin` would, so a lake can be
    extended day by day. Each day's `_SUCCESS` markers are written after its data (and its media).

    `counters` simulates a platform that keeps only daily rollups: instead of (not besides)
    `watch_events`, each day lands as `video_daily_stats` with only the named counters (of
    `DAILY_STATS_COUNTERS`; `plays` is required), e.g. `counters=("plays",)`. The world and its
    plays are the same as without it; only what lands differs.
    """
    if seed < 0 or days < 0 or videos_per_day < 1 or mean_plays <= 0:
        raise ValueError("need seed >= 0, days >= 0, videos_per_day >= 1 and mean_plays > 0")
    if counters is not None:
        unknown = sorted(set(counters) - set(DAILY_STATS_COUNTERS))
        if unknown or "plays" not in counters:
            raise ValueError(
                f"counters must include 'plays' and come from {list(DAILY_STATS_COUNTERS)}; "
                f"got {list(counters)}"
            )
    origin = start if origin is None else origin
    first = (start - origin).days
    if first < 0:
        raise ValueError(f"start {start} precedes origin {origin}")
    viewers = Viewers.make(seed, max(1_000, videos_per_day * 40))

    creators = Creators(seed)
    window: dict[int, DayVideos] = {}
    summary = SimulationSummary(days=days, videos=0, events=0)

    for day in range(first, first + days):
        # Keep the creation days whose videos can still be played today.
        for old in [d for d in window if d <= day - TAIL_DAYS - 1]:
            del window[old]
        for d in range(max(0, day - TAIL_DAYS), day + 1):
            if d not in window:
                window[d] = make_day(creators, seed, origin, d, videos_per_day, mean_plays)
        v = window[day]
        date = origin + dt.timedelta(days=day)
        iso = date.isoformat()
        # Re-writing a day: withdraw its markers first so nobody reads a half-written day.
        for table in ("videos", "watch_events", DAILY_STATS_TABLE):
            if lake.day_complete(table, iso):
                lake.fs.delete_file(f"{lake.landing_dir(table, iso)}/{SUCCESS_MARKER}")

        videos, truth = day_tables(lake, v, creators, seed, day, media, summary)
        events = events_table(
            [window[d] for d in sorted(window)], seed, day, day_start_us(date), viewers
        )
        if counters is None:
            plays = (lake.landing_dir("watch_events", iso), events)
        else:
            stats = daily_stats_table([window[d] for d in sorted(window)], events, date, counters)
            plays = (lake.landing_dir(DAILY_STATS_TABLE, iso), stats)
            summary.daily_stats_rows += stats.num_rows
        # (folder, rows, marker?): the truth gets no marker, the pipeline never reads it.
        outputs = [
            (lake.landing_dir("videos", iso), videos, True),
            (lake.path("truth", "videos", f"dt={iso}"), truth, False),
            (*plays, True),
        ]
        for directory, table, marker in outputs:
            lake.write_table(directory, table)
            summary.paths.append(f"{directory}/{PART_FILE}")
            if marker:
                lake.write_marker(directory)
                summary.paths.append(f"{directory}/{SUCCESS_MARKER}")

        summary.videos += len(v)
        summary.events += events.num_rows
        if progress is not None:
            rolled = "" if counters is None else f" as {plays[1].num_rows:,} daily-stats rows"
            progress(f"simulated {date}: {len(v):,} videos, {events.num_rows:,} events{rolled}")
    return summary


def day_tables(
    lake: Lake,
    v: DayVideos,
    creators: Creators,
    seed: int,
    day: int,
    media: bool,
    summary: SimulationSummary,
) -> tuple[pa.Table, pa.Table]:
    """A creation day's landing `videos` rows and its truth rows, its media written first
    (when `media`) so that the rows can point at them."""
    video_uri = cover_uri = None
    if media:
        video_uri, cover_uri = write_media(lake, v, seed, day, summary)
    creator_ids = pa.array([f"c{c:07d}" for c in v.creator], pa.string())
    return videos_table(v, video_uri, cover_uri, creator_ids), truth_table(v, creators, creator_ids)


def write_media(
    lake: Lake, v: DayVideos, seed: int, day: int, summary: SimulationSummary
) -> tuple[list[str], list[str]]:
    """Render, encode and write one creation day's clips and covers; return their URIs."""
    video_uri, cover_uri = [], []
    rng = stream_rng(seed, STREAM_MEDIA, day)
    for i, vid in enumerate(v.video_id.to_pylist()):
        planes = render_planes(rng, TOPICS[v.topic[i]], float(v.quality[i]))
        mp4 = lake.path("landing", "media", "videos", f"{vid}.mp4")
        jpg = lake.path("landing", "media", "covers", f"{vid}.jpg")
        lake.write_bytes(mp4, encode_planes(planes))
        lake.write_bytes(jpg, cover_jpeg(planes))
        video_uri.append(lake.uri(mp4))
        cover_uri.append(lake.uri(jpg))
        summary.paths += [mp4, jpg]
    return video_uri, cover_uri


def simulate_local(
    root: str | os.PathLike[str],
    start: dt.date,
    days: int,
    videos_per_day: int,
    seed: int = 0,
    **kwargs: Any,
) -> SimulationSummary:
    """`simulate` into a local folder (created if missing); URIs are absolute paths."""
    path = Path(root).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return simulate(Lake.local(path), start, days, videos_per_day, seed, **kwargs)
