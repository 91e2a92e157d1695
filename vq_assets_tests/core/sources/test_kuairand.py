"""The KuaiRand-Pure importer on a slice of the real files, checked against plain Python."""

import csv
import datetime as dt
import math
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from vq_assets.core.lake.contract import VIDEOS, WATCH_EVENTS, validate_day
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import Lake
from vq_assets.core.sources import kuairand as kr

SRC = Path(
    os.environ.get(
        "VQ_KUAIRAND_DIR", Path(__file__).resolve().parents[4] / "shared/data/kuairand_pure"
    )
)
pytestmark = pytest.mark.skipif(
    not SRC.is_dir(), reason=f"KuaiRand-Pure not found at {SRC} (set VQ_KUAIRAND_DIR)"
)

N_VIDEOS = 50
N_UNKNOWN = 3  # played events of a video outside the slice


def make_slice(dst: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """The first N_VIDEOS rows of the CSV (its lines, unchanged), their events and statistics,
    plus a few events of a video outside the slice. Returns the raw rows of the three sources
    (CSV rows as text, as the file has them)."""
    dst.mkdir()
    with open(SRC / kr.VIDEOS_CSV, encoding="utf-8") as f:
        lines = [f.readline() for _ in range(N_VIDEOS + 1)]
    (dst / kr.VIDEOS_CSV).write_text("".join(lines), encoding="utf-8")
    csv_rows = list(csv.DictReader(lines))
    ids = [int(r["video_id"]) for r in csv_rows]
    events = []
    for i, path in enumerate(sorted(SRC.glob(kr.EVENTS_GLOB))):
        t = pq.read_table(path)
        mine = t.filter(pc.is_in(t.column("video_id"), pa.array(ids)))
        if i == 0:  # the first file also carries the events of an unknown video
            played = t.filter(pc.greater(t.column("play_time_ms"), 0))
            stranger = played.filter(pc.invert(pc.is_in(played.column("video_id"), pa.array(ids))))
            mine = pa.concat_tables([mine, stranger.slice(0, N_UNKNOWN)])
        pq.write_table(mine, dst / path.name)
        events += mine.to_pylist()
    stats = pq.read_table(SRC / kr.STATS_PARQUET)
    stats = stats.filter(pc.is_in(stats.column("video_id"), pa.array(ids)))
    pq.write_table(stats, dst / kr.STATS_PARQUET)
    return csv_rows, events, stats.to_pylist()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("kuairand")
    raw = make_slice(root / "src")
    lake = Lake.local(root / "lake")
    return root / "src", lake, kr.import_kuairand(root / "src", lake), raw


def read_all(lake: Lake, table: str) -> pa.Table:
    days = lake.list_days(lake.path("landing", table))
    assert all(lake.day_complete(table, d) for d in days)
    return pa.concat_tables(
        lake.read_table(f"{lake.landing_dir(table, d)}/part-0.parquet") for d in days
    )


def test_videos_map_to_the_contract(imported):
    _, lake, summary, (csv_rows, _, _) = imported
    assert summary.videos == N_VIDEOS
    assert summary.creators == len({r["author_id"] for r in csv_rows})
    no_duration = {r["video_id"] for r in csv_rows if r["video_duration"] == ""}
    assert no_duration, "the slice should hold a video without duration (a picture post)"
    assert summary.videos_without_duration == len(no_duration)
    landed = {r["video_id"]: r for r in read_all(lake, "videos").to_pylist()}
    extras = {r["video_id"]: r for r in read_all(lake, kr.EXTRAS_TABLE).to_pylist()}
    assert set(landed) == set(extras) == {r["video_id"] for r in csv_rows}
    for r in csv_rows:
        v, x = landed[r["video_id"]], extras[r["video_id"]]
        assert v["creator_id"] == r["author_id"]
        day = dt.date.fromisoformat(r["upload_dt"])
        assert v["created_at"] == dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        want = float(r["video_duration"]) / 1000 if r["video_duration"] else None
        assert v["duration_s"] == want  # ms -> s
        assert [v[c] for c in ("language", "caption", "video_uri", "thumbnail_uri")] == [None] * 4
        assert v["creator_followers"] is None
        assert (x["upload_type"], x["tag"], x["video_type"]) == (
            r["upload_type"],
            r["tag"] or None,
            r["video_type"],
        )
        assert (x["width"], x["height"]) == (
            int(float(r["server_width"])),
            int(float(r["server_height"])),
        )
    # Through the contract: only the videos without a duration are quarantined.
    with connect() as con:
        rejects = pa.concat_tables(
            validate_day(con, lake, VIDEOS, d).rejects for d in summary.video_days
        )
    assert set(rejects.column("video_id").to_pylist()) == no_duration
    assert set(rejects.column("reason").to_pylist()) == {"duration_s is not > 0"}


def test_events_keep_plays_with_utc_timestamps_and_seconds(imported):
    _, lake, summary, (csv_rows, events, _) = imported
    known = {r["video_id"] for r in csv_rows}
    played = [e for e in events if e["play_time_ms"] > 0]
    assert summary.event_rows == len(events)
    assert summary.impressions_without_play == len(events) - len(played)
    assert summary.watch_events == len(played)
    assert summary.events_unknown_video == N_UNKNOWN
    assert sum(str(e["video_id"]) not in known for e in played) == N_UNKNOWN

    # (video_id, user_id, event_ts in µs, watch time in ms, liked, commented, shared)
    want = sorted(
        (
            str(e["video_id"]),
            str(e["user_id"]),
            e["time_ms"] * 1000,
            e["play_time_ms"],
            e["is_like"] == 1,
            e["is_comment"] == 1,
            e["is_forward"] == 1,
        )
        for e in played
    )
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    got_rows = []
    for day in summary.event_days:
        rows = lake.read_table(f"{lake.landing_dir('watch_events', day)}/part-0.parquet")
        for r in rows.to_pylist():
            assert r["event_ts"].date().isoformat() == day  # partitioned by UTC day
            got_rows.append(
                (
                    r["video_id"],
                    r["user_id"],
                    (r["event_ts"] - epoch) // dt.timedelta(microseconds=1),
                    round(r["watch_time_s"] * 1000),
                    r["liked"],
                    r["commented"],
                    r["shared"],
                )
            )
            assert math.isclose(r["watch_time_s"] * 1000, round(r["watch_time_s"] * 1000))
    assert sorted(got_rows) == want
    assert len(set(want)) == len(want) - summary.duplicate_events
    with connect() as con:
        checked = [validate_day(con, lake, WATCH_EVENTS, d) for d in summary.event_days]
    assert sum(c.rejects.num_rows for c in checked) == 0
    assert sum(c.duplicates_dropped for c in checked) == summary.duplicate_events


def test_month_statistics_become_labels_by_the_readme(imported):
    _, lake, summary, (csv_rows, _, stats) = imported
    table = lake.read_table(lake.path("landing", kr.STATS_TABLE, "part-0.parquet"))
    assert table.schema == kr.VIDEO_STATS_MONTH_SCHEMA
    assert lake.exists(lake.path("landing", kr.STATS_TABLE, "_SUCCESS"))
    assert summary.videos_with_stats == table.num_rows == len(stats) == N_VIDEOS
    got = {r["video_id"]: r for r in table.to_pylist()}
    creators = {r["video_id"]: r["author_id"] for r in csv_rows}
    for s in stats[:3]:
        n = s["counts"]
        plays = round(s["play_cnt"] * n)
        skips = round(s["short_time_play_cnt"] * n)
        likes, comments = round(s["like_cnt"] * n), round(s["comment_cnt"] * n)
        row = got[str(s["video_id"])]
        assert row["creator_id"] == creators[str(s["video_id"])]
        assert (row["plays"], row["skips"], row["full_watches"]) == (
            plays,
            skips,
            round(s["complete_play_cnt"] * n),
        )
        assert (row["likes"], row["comments"], row["shares"]) == (
            likes,
            comments,
            round(s["share_cnt"] * n),
        )
        assert row["avg_watch_time_s"] == pytest.approx(s["play_duration"] / s["play_cnt"] / 1000)
        assert row["skip_rate"] == pytest.approx(s["short_time_play_cnt"] / s["play_cnt"])
        assert row["engagement_rate"] == pytest.approx((likes + comments) / plays)
        assert row["window"] == kr.STATS_WINDOW and row["stat_records"] == n
    # Video 0, by hand: 816.88 plays per record x 102 records; 33.9 s mean watch of 87.4 s.
    assert got["0"]["plays"] == 83322 and got["0"]["avg_watch_time_s"] == pytest.approx(
        33.884, abs=1e-3
    )


def _rename_csv_column(src: Path) -> None:
    path = src / kr.VIDEOS_CSV
    path.write_text(path.read_text().replace("upload_dt", "uploaded", 1))


def _bad_csv_duration(src: Path) -> None:
    path = src / kr.VIDEOS_CSV
    header, first, *rest = path.read_text().splitlines(keepends=True)
    cells = first.split(",")
    cells[header.split(",").index("video_duration")] = "long"
    path.write_text("".join([header, ",".join(cells), *rest]))


def _events_in_seconds(src: Path) -> None:
    path = sorted(src.glob(kr.EVENTS_GLOB))[0]
    t = pq.read_table(path)
    seconds = pc.divide(t.column("time_ms"), 1000)
    pq.write_table(t.set_column(t.schema.get_field_index("time_ms"), "time_ms", seconds), path)


def _stats_without_play_cnt(src: Path) -> None:
    path = src / kr.STATS_PARQUET
    pq.write_table(pq.read_table(path).drop_columns(["play_cnt"]), path)


def _play_duration_in_seconds(src: Path) -> None:
    path = src / kr.STATS_PARQUET
    t = pq.read_table(path)
    i = t.schema.get_field_index("play_duration")
    pq.write_table(t.set_column(i, "play_duration", pc.divide(t.column(i), 1000.0)), path)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (_rename_csv_column, rf"{kr.VIDEOS_CSV}: column 'upload_dt' is missing"),
        (_bad_csv_duration, rf"{kr.VIDEOS_CSV}: column 'video_duration' cannot be read"),
        (_events_in_seconds, r"log_standard_.*: column 'time_ms' is not unix milliseconds"),
        (_stats_without_play_cnt, rf"{kr.STATS_PARQUET}: column 'play_cnt' is missing"),
        (_play_duration_in_seconds, rf"{kr.STATS_PARQUET}: column 'play_duration' is not in ms"),
    ],
)
def test_unexpected_files_fail_naming_file_and_column(imported, tmp_path, breakage, message):
    src = shutil.copytree(imported[0], tmp_path / "src")
    breakage(src)
    with pytest.raises(kr.KuaiRandFormatError, match=message):
        kr.import_kuairand(src, Lake.local(tmp_path / "lake"))
    assert not (tmp_path / "lake").exists()  # nothing landed from a broken source
