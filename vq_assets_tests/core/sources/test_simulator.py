import dataclasses
import datetime as dt
import io
import re
from pathlib import Path

import av
import boto3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy.stats import spearmanr

from vq_assets.core.labels.daily_stats import daily_stats_from_events, validate_daily_stats_day
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import Lake
from vq_assets.core.sources.simulator import (
    DAILY_STATS_COUNTERS,
    LANGUAGES,
    VIDEOS_SCHEMA,
    WATCH_EVENTS_SCHEMA,
    SimulationSummary,
    encode_mp4,
    expected_labels,
    render_frames,
    simulate,
    simulate_local,
    world,
)
from vq_assets.core.sources.simulator.captions import LEXICONS
from vq_assets.core.sources.simulator.world import Creators, make_day

START = dt.date(2026, 1, 1)
DAY_US = 86_400_000_000


def _days(start: dt.date, n: int) -> list[str]:
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(n)]


def _read(root: Path, table: str, days: list[str]) -> pa.Table:
    return pa.concat_tables(
        pq.read_table(root / table / f"dt={d}" / "part-0.parquet") for d in days
    )


def _day_us(day: str) -> int:
    return (dt.date.fromisoformat(day).toordinal() - dt.date(1970, 1, 1).toordinal()) * DAY_US


def _decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _parquet_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def media_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationSummary, list]:
    root = tmp_path_factory.mktemp("media_lake")
    lines: list[str] = []
    summary = simulate_local(root, START, 3, 30, seed=7, progress=lines.append)
    return root, summary, lines


@pytest.fixture(scope="module")
def signal_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("signal_lake")
    simulate_local(root, START, 5, 100, seed=3, media=False, mean_plays=80.0)
    return root


def test_layout_and_markers_written_last(media_world):
    root, summary, lines = media_world
    days = _days(START, 3)
    assert (summary.days, summary.videos) == (3, 90)
    for table in ("videos", "watch_events"):
        assert sorted(p.name for p in (root / "landing" / table).iterdir()) == [
            f"dt={d}" for d in days
        ]
        for d in days:
            folder = root / "landing" / table / f"dt={d}"
            assert sorted(p.name for p in folder.iterdir()) == ["_SUCCESS", "part-0.parquet"]
            assert (folder / "_SUCCESS").read_bytes() == b""
            # the marker lands after the day's data, and after all media its rows point at
            order = summary.paths.index
            assert order(f"{folder}/_SUCCESS") > order(f"{folder}/part-0.parquet")
            if table == "videos":
                uris = pq.read_table(folder / "part-0.parquet")["video_uri"].to_pylist()
                assert order(f"{folder}/_SUCCESS") > max(order(u) for u in uris)
    for d in days:
        assert (root / "truth" / "videos" / f"dt={d}" / "part-0.parquet").exists()
    assert not (root / "truth" / "videos" / f"dt={days[0]}" / "_SUCCESS").exists()
    assert summary.events == _read(root, "landing/watch_events", days).num_rows
    assert [line.split(":")[0] for line in lines] == [f"simulated {d}" for d in days]
    assert lines[0].endswith(" events") and "30 videos" in lines[0]


def test_schemas_ids_and_time_windows(media_world):
    root, _, _ = media_world
    days = _days(START, 3)
    videos = _read(root, "landing/videos", days)
    events = _read(root, "landing/watch_events", days)
    assert videos.schema == VIDEOS_SCHEMA
    assert events.schema == WATCH_EVENTS_SCHEMA
    assert len(set(videos["video_id"].to_pylist())) == videos.num_rows == 90
    assert pc.all(pc.greater(videos["duration_s"], 0)).as_py()
    assert pc.all(pc.greater_equal(events["watch_time_s"], 0)).as_py()
    assert set(videos["language"].drop_null().to_pylist()) <= set(LANGUAGES)
    assert pc.all(pc.greater_equal(videos["creator_followers"], 0)).as_py()
    for d in days:
        lo, hi = _day_us(d), _day_us(d) + DAY_US
        for table, col in (("videos", "created_at"), ("watch_events", "event_ts")):
            t = pq.read_table(root / "landing" / table / f"dt={d}" / "part-0.parquet")
            us = t[col].cast(pa.int64()).to_numpy()
            assert len(us) > 0 and us.min() >= lo and us.max() < hi, (table, d)

    created = dict(
        zip(
            videos["video_id"].to_pylist(),
            videos["created_at"].cast(pa.int64()).to_pylist(),
            strict=True,
        )
    )
    event_created = np.array([created[v] for v in events["video_id"].to_pylist()])
    assert (events["event_ts"].cast(pa.int64()).to_numpy() >= event_created).all()


def test_media_files_decode(media_world):
    root, _, _ = media_world
    videos = _read(root, "landing/videos", _days(START, 3))
    for vid, uri, cover in zip(
        videos["video_id"].to_pylist(),
        videos["video_uri"].to_pylist(),
        videos["thumbnail_uri"].to_pylist(),
        strict=True,
    ):
        assert uri == str(root / "landing" / "media" / "videos" / f"{vid}.mp4")
        assert cover == str(root / "landing" / "media" / "covers" / f"{vid}.jpg")
        frames = _decode(Path(uri).read_bytes())
        assert frames.shape[0] > 0 and frames.shape[1:] == (64, 64, 3)
        with Image.open(cover) as image:
            assert image.format == "JPEG" and image.size == (64, 64)


def test_without_media_uris_are_null(tmp_path):
    simulate_local(tmp_path, START, 1, 10, media=False)
    videos = pq.read_table(tmp_path / "landing/videos/dt=2026-01-01/part-0.parquet")
    assert videos["video_uri"].null_count == videos["thumbnail_uri"].null_count == 10
    assert not (tmp_path / "landing" / "media").exists()


def test_same_arguments_same_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        simulate_local(root, START, 2, 20, seed=5, media=False)
    files = _parquet_bytes(a)
    assert len(files) == 6 and files == _parquet_bytes(b)
    simulate_local(a, START, 2, 20, seed=5, media=False)  # re-writing a lake is idempotent
    assert _parquet_bytes(a) == files

    # with media the URIs name different folders, but the media bytes are identical too
    for root in (a / "m", b / "m"):
        simulate_local(root, START, 1, 8, seed=5)
    media = sorted(p.relative_to(a / "m") for p in (a / "m/landing/media").rglob("*.*"))
    assert len(media) == 16
    assert all((a / "m" / p).read_bytes() == (b / "m" / p).read_bytes() for p in media)


def test_days_do_not_depend_on_the_length_of_the_run(tmp_path):
    simulate_local(tmp_path / "short", START, 2, 25, seed=1, media=False)
    simulate_local(tmp_path / "long", START, 4, 25, seed=1, media=False)
    short, long = _parquet_bytes(tmp_path / "short"), _parquet_bytes(tmp_path / "long")
    assert len(short) == 6 and len(long) == 12
    assert all(long[name] == data for name, data in short.items())

    # a run that starts later on the same origin writes exactly the remaining days
    later = tmp_path / "later"
    simulate_local(later, START + dt.timedelta(days=2), 2, 25, seed=1, media=False, origin=START)
    rest = _parquet_bytes(later)
    assert len(rest) == 6 and all(long[name] == data for name, data in rest.items())
    # and a different seed is a different world
    simulate_local(tmp_path / "other", START, 2, 25, seed=2, media=False)
    assert _parquet_bytes(tmp_path / "other") != short


def test_appeal_drives_realised_skip_rate(signal_world):
    days = _days(START, 5)
    truth = _read(signal_world, "truth/videos", days)
    events = _read(signal_world, "landing/watch_events", days)
    videos = _read(signal_world, "landing/videos", days)
    duration = dict(
        zip(videos["video_id"].to_pylist(), videos["duration_s"].to_pylist(), strict=True)
    )
    watch = events["watch_time_s"].to_numpy()
    vid = np.array(events["video_id"].to_pylist())
    dur = np.array([duration[v] for v in vid])

    index = {v: i for i, v in enumerate(truth["video_id"].to_pylist())}
    rows = np.array([index[v] for v in vid])
    plays = np.bincount(rows, minlength=truth.num_rows)
    skips = np.bincount(rows, weights=watch < 3.0, minlength=truth.num_rows)
    keep = plays >= 20
    assert keep.sum() > 200
    rho = spearmanr(truth["appeal"].to_numpy()[keep], skips[keep] / plays[keep])[0]
    assert rho < -0.3
    rho = spearmanr(truth["expected_skip_rate"].to_numpy()[keep], skips[keep] / plays[keep])[0]
    assert rho > 0.5

    # full watches stop exactly at the end or replay beyond it; skips exist
    assert (watch == dur).mean() > 0.05 and (watch > dur).mean() > 0.05
    assert 0.05 < (watch < 3.0).mean() < 0.6
    # unknowns are present where the contract allows them
    for col in ("liked", "commented", "shared"):
        assert 0 < events[col].null_count < 0.05 * events.num_rows
    for col in ("language", "caption", "creator_followers"):
        assert 0 < videos[col].null_count < 0.15 * videos.num_rows


def test_mean_plays_scales_exposure(tmp_path):
    small = simulate_local(tmp_path / "a", START, 2, 50, media=False, mean_plays=30.0)
    large = simulate_local(tmp_path / "b", START, 2, 50, media=False, mean_plays=60.0)
    assert 1.7 < large.events / small.events < 2.3


def test_topics_look_different_and_quality_shows():
    def motion(topic: str) -> float:
        diffs = []
        for seed in range(3):
            for quality in (-1.0, 0.0, 1.0):
                frames = render_frames(np.random.default_rng(seed), topic, quality)
                decoded = _decode(encode_mp4(frames)).astype(np.float32)
                assert 12 <= decoded.shape[0] <= 16
                diffs.append(np.abs(np.diff(decoded, axis=0)).mean())
        return float(np.mean(diffs))

    assert motion("dance") > 2 * motion("talking_head")

    def brightness(quality: float) -> float:
        rng = np.random.default_rng(0)
        return float(np.mean([render_frames(rng, "cooking", quality).mean() for _ in range(3)]))

    assert brightness(-2.0) < brightness(2.0) - 20


def test_s3_uris(tmp_path):
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        fs = pafs.S3FileSystem(
            access_key="test",
            secret_key="test",
            endpoint_override=f"http://{host}:{port}",
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        fs.create_dir("bucket")
        client = boto3.client(
            "s3",
            endpoint_url=f"http://{host}:{port}",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        simulate(Lake("s3://bucket/lake", fs, client), START, 1, 3)
        day = "bucket/lake/landing/videos/dt=2026-01-01"
        videos = pq.read_table(f"{day}/part-0.parquet", filesystem=fs)
        uri = videos["video_uri"][0].as_py()
        assert uri.startswith("s3://bucket/lake/landing/media/videos/v")
        assert fs.get_file_info(uri.removeprefix("s3://")).size > 0
        assert fs.get_file_info(f"{day}/_SUCCESS").type == pafs.FileType.File
    finally:
        server.stop()


def test_bad_arguments():
    lake = Lake.local("/nowhere")
    with pytest.raises(ValueError):
        simulate(lake, START, 1, 10, seed=-1)
    with pytest.raises(ValueError):
        simulate(lake, START, 1, 10, origin=START + dt.timedelta(days=1))


# -- a platform that keeps only daily counters ------------------------------------------------


def _stats_from_events(root: Path, days: list[str]) -> pa.Table:
    """The rollups the labels' own SQL makes from a lake's landed events."""
    with connect() as con:
        con.register("videos", _read(root, "landing/videos", days))
        con.register("events", _read(root, "landing/watch_events", days))
        return daily_stats_from_events(con)


def test_counters_land_daily_stats_instead_of_events_from_the_same_world(tmp_path):
    days = _days(START, 4)
    simulate_local(tmp_path / "events", START, 4, 25, seed=4, media=False)
    summary = simulate_local(
        tmp_path / "plays", START, 4, 25, seed=4, media=False, counters=("plays",)
    )
    simulate_local(
        tmp_path / "all", START, 4, 25, seed=4, media=False, counters=DAILY_STATS_COUNTERS
    )
    plays_root = tmp_path / "plays"
    assert sorted(p.name for p in (plays_root / "landing").iterdir()) == [
        "video_daily_stats",
        "videos",
    ]
    stats = _read(plays_root, "landing/video_daily_stats", days)
    assert stats.column_names == ["video_id", "day", "plays"]  # the others left out entirely
    for d in days:
        assert (plays_root / "landing" / "video_daily_stats" / f"dt={d}" / "_SUCCESS").exists()
    # The same world: the same videos, and the rollups of the events it would have landed.
    assert _parquet_bytes(plays_root / "landing/videos") == _parquet_bytes(
        tmp_path / "events/landing/videos"
    )
    want = _stats_from_events(tmp_path / "events", days)
    assert stats.equals(want.select(["video_id", "day", "plays"]))
    assert summary.daily_stats_rows == stats.num_rows
    assert summary.events == pc.sum(stats["plays"]).as_py()
    # Every counter kept: exactly what the labels' SQL counts from the events.
    full = _read(tmp_path / "all", "landing/video_daily_stats", days)
    assert full.drop_columns(["watch_time_s_sum"]).equals(want.drop_columns(["watch_time_s_sum"]))
    assert np.allclose(full["watch_time_s_sum"].to_numpy(), want["watch_time_s_sum"].to_numpy())
    # And it passes the contract as landed.
    with connect() as con:
        checked = validate_daily_stats_day(con, Lake.local(plays_root), days[0])
    assert checked.rejects.num_rows == 0 and checked.valid.num_rows > 0


@pytest.mark.parametrize("counters", [("likes",), ("plays", "views"), ()])
def test_counters_need_plays_and_known_names(tmp_path, counters):
    with pytest.raises(ValueError, match="plays"):
        simulate_local(tmp_path, START, 1, 5, media=False, counters=counters)


def test_expected_labels_cover_day0_and_virality(signal_world):
    days = _days(START, 5)
    truth = _read(signal_world, "truth/videos", days)
    expected = expected_labels(truth)
    assert {"plays", "engagement_rate", "day0_plays", "virality"} <= set(expected)
    followers = truth["followers"].to_numpy(zero_copy_only=False).astype(float)
    unknown = ~(followers > 0)
    assert unknown.any() and np.isnan(expected["virality"][unknown]).all()
    known = ~unknown
    assert np.allclose(
        expected["virality"][known],
        (expected["day0_plays"][known] + expected["plays"][known]) / followers[known],
    )
    assert (expected["day0_plays"] < expected["plays"]).all()
    # The expectation ranks the realised day-0 plays of the first three days' videos.
    videos = _read(signal_world, "landing/videos", days)
    events = _read(signal_world, "landing/watch_events", days)
    ids, stamps = videos["video_id"].to_pylist(), videos["created_at"].cast(pa.int64()).to_pylist()
    created = dict(zip(ids, stamps, strict=True))
    ts_us = events["event_ts"].cast(pa.int64()).to_numpy()
    vid = events["video_id"].to_pylist()
    day0 = np.array([ts_us[i] < created[v] + DAY_US for i, v in enumerate(vid)])
    index = {v: i for i, v in enumerate(truth["video_id"].to_pylist())}
    rows = np.array([index[v] for v in vid])
    realised = np.bincount(rows[day0], minlength=truth.num_rows)
    first = np.array([created[v] < _day_us(days[3]) for v in truth["video_id"].to_pylist()])
    rho = spearmanr(expected["day0_plays"][first], realised[first])[0]
    assert rho > 0.5, rho


def test_expected_labels_of_older_truth_leave_day0_and_virality_out(signal_world):
    truth = _read(signal_world, "truth/videos", _days(START, 1))
    old = truth.drop_columns(["expected_plays_day0_at_creation", "followers"])
    expected = expected_labels(old)
    assert "virality" not in expected and "plays" in expected


# Letters of each language's own script (the global hashtags such as #fyp stay latin).
SCRIPTS = {
    "ja": r"[\u3040-\u30ff\u4e00-\u9fff]",
    "ko": r"[\uac00-\ud7af\u3130-\u318f]",
    "ar": r"[\u0600-\u06ff]",
    "hi": r"[\u0900-\u097f]",
}


def test_captions_are_written_in_the_videos_language():
    day = make_day(Creators(11), 11, START, 3, 2000, 60.0)
    seen = set()
    for i, caption in enumerate(day.caption):
        if caption is None:
            continue
        lang = LANGUAGES[day.language[i]]
        seen.add(lang)
        words = caption.split()
        # The topic is read from the language's own words: one of them is always there.
        topic_words = set(LEXICONS[lang].topics[day.topic[i]].split())
        assert topic_words & set(words), (lang, caption)
        if lang in SCRIPTS:
            assert re.search(SCRIPTS[lang], caption), (lang, caption)
            latin = [w for w in words if re.search("[a-z]", w) and not w.startswith("#")]
            assert not latin, (lang, caption)
        else:
            assert not re.search("|".join(SCRIPTS.values()), caption), (lang, caption)
    assert seen == set(LANGUAGES)


def _old_captions(rng, topic, language, p_hook):
    """The draws of the captions before they were written per language, in the same order and
    shapes (a copy of the old English-only function's draws)."""
    n = len(topic)
    rng.integers(1, 4, n), rng.integers(0, 3, n), rng.integers(0, 4, n)
    rng.integers(0, 1 << 30, (n, 3)), rng.integers(0, 21, (n, 2)), rng.integers(0, 1 << 30, (n, 3))
    rng.integers(0, 6, n), rng.random(n), rng.random(n), rng.random(n)
    return ["old"] * n


def test_captions_leave_the_rest_of_the_world_unchanged(monkeypatch):
    new = [make_day(Creators(5), 5, START, d, 300, 60.0) for d in range(2)]
    monkeypatch.setattr(world, "captions", _old_captions)
    old = [make_day(Creators(5), 5, START, d, 300, 60.0) for d in range(2)]
    for a, b in zip(new, old, strict=True):
        for f in dataclasses.fields(a):
            if f.name != "caption":
                x, y = getattr(a, f.name), getattr(b, f.name)
                assert x.equals(y) if isinstance(x, pa.Array) else np.array_equal(x, y), f.name
        assert b.caption == ["old"] * len(b)
