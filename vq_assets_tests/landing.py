"""Writing small landing days by hand, for tests of the contract and the labels."""

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vq_assets.core.lake.contract import VIDEOS_SCHEMA, WATCH_EVENTS_SCHEMA

UTC = dt.UTC


def ts(day: str, hours: float = 0.0) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=UTC) + dt.timedelta(hours=hours)


def video(vid: str, created_at: dt.datetime, duration_s: float = 10.0, **kw) -> dict:
    row = {
        "video_id": vid,
        "creator_id": kw.pop("creator_id", "c1"),
        "created_at": created_at,
        "duration_s": duration_s,
        "language": kw.pop("language", "en"),
        "caption": kw.pop("caption", f"caption of {vid}"),
        "video_uri": None,
        "thumbnail_uri": None,
        "creator_followers": kw.pop("creator_followers", 100),
    }
    row.update(kw)
    return row


def event(vid: str, at: dt.datetime, watch: float, user: str = "u1", **kw) -> dict:
    return {
        "video_id": vid,
        "user_id": user,
        "event_ts": at,
        "watch_time_s": watch,
        "liked": kw.get("liked", False),
        "commented": kw.get("commented", False),
        "shared": kw.get("shared", None),
    }


def write_day(
    lake_root: Path,
    table: str,
    day: str,
    rows: list[dict],
    *,
    marker: bool = True,
    name: str = "part-00000.parquet",
) -> Path:
    schema = VIDEOS_SCHEMA if table == "videos" else WATCH_EVENTS_SCHEMA
    directory = Path(lake_root) / "landing" / table / f"dt={day}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    if marker:
        (directory / "_SUCCESS").touch()
    return path


def events_by_day(events: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in events:
        out.setdefault(e["event_ts"].date().isoformat(), []).append(e)
    return out


def reference_aggregate(inside: list[dict], duration: float) -> dict:
    """The §4 labels of a video from the events counted for it, in plain Python (the
    independent reference the SQL is tested against)."""
    plays = len(inside)
    skips = sum(e["watch_time_s"] < 3.0 for e in inside)
    likes = sum(e["liked"] is True for e in inside)
    comments = sum(e["commented"] is True for e in inside)
    return {
        "plays": plays,
        "skips": skips,
        "full_watches": sum(e["watch_time_s"] >= duration for e in inside),
        "avg_watch_time_s": sum(e["watch_time_s"] for e in inside) / plays if plays else None,
        "skip_rate": skips / plays if plays else None,
        "likes": likes,
        "comments": comments,
        "shares": sum(e["shared"] is True for e in inside),
        "engagement_rate": (likes + comments) / plays if plays else None,
    }
