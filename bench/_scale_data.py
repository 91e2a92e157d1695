"""The scale benchmark's lake, written in streaming fashion (seeded; never whole in memory), and
the helpers that measure its workers.

Days are numbered from `Layout.start`: C0..C8. Landing zone, per the contract (DESIGN §3,
`VIDEOS_SCHEMA`, `WATCH_EVENTS_SCHEMA`), several part files per day, each day closed by its
`_SUCCESS` marker after its parts:

  videos C0..C8          `videos` rows per day, created uniformly over the day, creators drawn
                         with a power law from a pool of videos/4 (the busiest posts ~n^(1/3)
                         videos a day), no media (URIs null, as `simulate(media=False)`).
  watch_events C7 (= E)  `events` rows of the videos of E-7..E: a play picks the video's age a
                         with weight AGE_WEIGHTS[a], then a video of that day with a power law
                         (the day's top video gets ~n^(-1/3) of that day's plays; ids permuted
                         so that popularity is not the creation order). Same-day plays only
                         pick videos created before the play.
  watch_events C0..C6    only the plays of C0's videos: events * AGE_WEIGHTS[k] rows on day Ck,
                         i.e. exactly the rows C0's labels need from a steady-state day of
                         `events` plays; the plays of other videos on those days are not
                         written (label day D = C0 reads only its own videos' partials).

Beside it, for scoring day F = C8: `video_embeddings` (random L2-normalised vectors of BLIP
base's width, 256 + 256) and model v1 under `<lake>/models/quality/` (`train_model`, production
shape, one epoch on 4,000 synthetic rows). Also here: BLIP base's image rate on a CUDA device,
and the workers' memory measurement and watchdog.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vq_assets.core.lake.contract import UTC_TS, VIDEOS_SCHEMA, WATCH_EVENTS_SCHEMA
from vq_assets.core.lake.store import Lake

DAY_US = 86_400_000_000
# Share of a day's plays by the age (days) of the video played; 8 ages = one 7-day window.
AGE_WEIGHTS = (0.30, 0.20, 0.14, 0.11, 0.09, 0.07, 0.05, 0.04)
EVENT_CHUNK = 2_000_000  # rows generated (and written as one row group) at a time
EVENT_PART = 10_000_000  # rows per landing part file
VIDEO_PART = 250_000
EMB_DIM = 256  # BLIP base's image_text_hidden_size
EMB_CHUNK = 100_000
LANGS = ("en", "es", "pt", "id", "ja", "ko", "ar", "hi", "fr", "de", "ru", "tr", "it")
LANG_P = np.array([40, 12, 8, 7, 5, 4, 4, 4, 3, 3, 3, 2, 1], float)
CAPTIONS = (
    "morning routine in five minutes #life",
    "you will not believe what happened next",
    "street food tour: the best noodles in town",
    "learn this guitar riff in 30 seconds",
    "cat vs cucumber, part 12",
    "how I fixed my bike with a spoon",
    "tutorial: three easy makeup looks for summer",
    None,
)


@dataclass(frozen=True)
class Layout:
    start: dt.date
    videos: int
    events: int
    seed: int

    def day(self, k: int) -> str:
        return (self.start + dt.timedelta(days=k)).isoformat()

    @property
    def label_day(self) -> str:  # D: its window's event days are C0..C7
        return self.day(0)

    @property
    def event_day(self) -> str:  # E: the full-size event day
        return self.day(7)

    @property
    def score_day(self) -> str:  # F: the first day whose creator features see D's labels
        return self.day(8)

    def window_events(self, k: int) -> int:
        """Rows of landing watch_events on day Ck."""
        return self.events if k == 7 else round(self.events * AGE_WEIGHTS[k])

    def stamp(self) -> str:
        return json.dumps({**asdict(self), "start": self.start.isoformat()}, sort_keys=True)


def _day_start_us(layout: Layout, k: int) -> int:
    start = dt.datetime.combine(layout.start, dt.time(), tzinfo=dt.UTC)
    return int(start.timestamp()) * 1_000_000 + k * DAY_US


def _mix(x: np.ndarray, salt: int) -> np.ndarray:
    """A cheap deterministic hash of small non-negative integers into [0, 2^32)."""
    return (x.astype(np.uint64) * np.uint64(2654435761) + np.uint64(salt)) % np.uint64(2**32)


def duration_ms(i: np.ndarray, k: int) -> np.ndarray:
    return 5_000 + (_mix(i, 97 * k) % np.uint64(115_000)).astype(np.int64)


def video_ids(layout: Layout, k: int, lo: int, hi: int) -> pa.Array:
    """The simulator's id format `v<YYYYMMDD><i:07d>`: ids sort by creation day."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(lo, hi)), pa.string()), 7, "0")
    return pc.binary_join_element_wise(f"v{layout.day(k).replace('-', '')}", digits, "")


def videos_part(layout: Layout, k: int, lo: int, hi: int) -> pa.Table:
    n, m = layout.videos, hi - lo
    rng = np.random.default_rng([layout.seed, 1, k, lo])
    i = np.arange(lo, hi, dtype=np.int64)
    creators = max(1_000, n // 4)
    creator = (creators * rng.random(m) ** 1.5).astype(np.int64)
    followers = np.floor(np.exp(3 + 8 * _mix(creator, 11) / 2**32)).astype(np.int64)
    lang = rng.choice(len(LANGS), m, p=LANG_P / LANG_P.sum())
    caption = pa.array(CAPTIONS, pa.string()).take(pa.array(rng.integers(0, len(CAPTIONS), m)))
    return pa.table(
        [
            video_ids(layout, k, lo, hi),
            pc.binary_join_element_wise("c", pc.cast(pa.array(creator), pa.string()), ""),
            pa.array(_day_start_us(layout, k) + i * DAY_US // n, UTC_TS),
            pa.array(duration_ms(i, k) / 1000.0, pa.float64()),
            pc.if_else(
                pa.array(rng.random(m) < 0.04),
                pa.scalar(None, pa.string()),
                pa.array(LANGS, pa.string()).take(pa.array(lang)),
            ),
            caption,
            pa.nulls(m, pa.string()),
            pa.nulls(m, pa.string()),
            pa.array(followers, pa.int64(), mask=rng.random(m) < 0.03),
        ],
        schema=VIDEOS_SCHEMA,
    )


def _permutation_step(n: int) -> int:
    """A multiplier coprime to n: i -> i * step % n permutes 0..n-1."""
    step = 1_000_003
    while math.gcd(step, n) != 1:
        step += 2
    return step


def events_chunk(
    layout: Layout, ids: pa.Array, k: int, j: int, chunks: int, m: int, only_c0: bool
) -> pa.Table:
    """Chunk j of `chunks` of day Ck: m plays in the j-th slice of the day, sorted by time.

    `ids` holds the ids of days C0..C7 back to back (day d at d * n)."""
    n = layout.videos
    rng = np.random.default_rng([layout.seed, 2, k, j])
    lo, hi = j * DAY_US // chunks, (j + 1) * DAY_US // chunks
    t = np.sort(rng.integers(lo, hi, m))
    age = np.full(m, k) if only_c0 else rng.choice(8, m, p=AGE_WEIGHTS)
    u = rng.random(m) ** 3  # power-law popularity rank
    i = (u * n).astype(np.int64) * _permutation_step(n) % n
    young = age == 0  # a same-day play picks among the videos created before it
    seen = t[young] * n // DAY_US + 1
    i[young] = (u[young] * seen).astype(np.int64)
    day = k - age
    dur = np.zeros(m, np.int64)
    for d in np.unique(day):
        sel = day == d
        dur[sel] = duration_ms(i[sel], int(d))
    kind = rng.random(m)
    replay = np.where(rng.random(m) < 0.5, 0, rng.integers(0, 1 << 62, m) % np.maximum(dur, 1))
    watch_ms = np.where(
        kind < 0.30,
        rng.integers(0, 3_000, m),  # skips
        np.where(
            kind < 0.45,
            dur + replay,  # full watches, half of them with a replay
            3_000 + ((dur - 3_000) * rng.random(m)).astype(np.int64),
        ),
    )
    users = max(1_000, layout.events // 10)
    user = (users * rng.random(m) ** 2).astype(np.int64)  # heavy users

    def flag(p: float) -> pa.Array:
        return pa.array(rng.random(m) < p, pa.bool_(), mask=rng.random(m) < 0.01)

    return pa.table(
        [
            ids.take(pa.array(day * n + i)),
            pc.binary_join_element_wise("u", pc.cast(pa.array(user), pa.string()), ""),
            pa.array(_day_start_us(layout, k) + t, UTC_TS),
            pa.array(watch_ms / 1000.0, pa.float64()),
            flag(0.06),
            flag(0.01),
            flag(0.008),
        ],
        schema=WATCH_EVENTS_SCHEMA,
    )


def write_landing(lake: Lake, layout: Layout) -> dict[str, int]:
    """Videos of C0..C8 and watch events of C0..C7, part by part; returns rows per table."""
    n = layout.videos
    if n >= 10**7:
        raise ValueError("--videos must be below 10M (7-digit ids per day)")
    written = {"videos": 0, "watch_events": 0}
    for k in range(9):
        directory = lake.landing_dir("videos", layout.day(k))
        Path(directory).mkdir(parents=True, exist_ok=True)
        for p, lo in enumerate(range(0, n, VIDEO_PART)):
            part = videos_part(layout, k, lo, min(n, lo + VIDEO_PART))
            pq.write_table(part, Path(directory, f"part-{p:05d}.parquet"), compression="zstd")
            written["videos"] += part.num_rows
        lake.write_marker(directory)
    ids = pa.concat_arrays([video_ids(layout, k, 0, n) for k in range(8)])
    for k in range(8):
        total = layout.window_events(k)
        directory = lake.landing_dir("watch_events", layout.day(k))
        Path(directory).mkdir(parents=True, exist_ok=True)
        chunks = max(1, math.ceil(total / EVENT_CHUNK))
        per_part = max(1, EVENT_PART // EVENT_CHUNK)
        writer: pq.ParquetWriter | None = None
        for j in range(chunks):
            if j % per_part == 0:
                if writer is not None:
                    writer.close()
                path = Path(directory, f"part-{j // per_part:05d}.parquet")
                writer = pq.ParquetWriter(path, WATCH_EVENTS_SCHEMA, compression="zstd")
            m = total * (j + 1) // chunks - total * j // chunks
            table = events_chunk(layout, ids, k, j, chunks, m, only_c0=k < 7)
            assert writer is not None
            writer.write_table(table, row_group_size=len(table))
            written["watch_events"] += m
        if writer is not None:
            writer.close()
        lake.write_marker(directory)
    return written


def _embeddings_part(layout: Layout, rng: np.random.Generator, lo: int, m: int) -> pa.Table:
    from vq_assets.core.embeddings.pipeline import embeddings_schema

    def vectors() -> pa.Array:
        x = rng.standard_normal((m, EMB_DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), EMB_DIM)

    def const(value: object, typ: pa.DataType) -> pa.Array:
        return pa.array([value] * m, typ)

    yes = const(True, pa.bool_())
    return pa.table(
        [
            video_ids(layout, 8, lo, lo + m),
            vectors(),
            vectors(),
            yes,
            yes,
            const("frames", pa.string()),
            const("ok", pa.string()),
            pa.nulls(m, pa.string()),
            const("scale-bench-random", pa.string()),
            yes,
        ],
        schema=embeddings_schema(EMB_DIM, EMB_DIM),
    )


def write_embeddings(lake: Lake, layout: Layout) -> int:
    """`video_embeddings`[F] as the IO manager writes it (one part file), chunk by chunk."""
    n = layout.videos
    directory = Path(lake.asset_dir("video_embeddings", layout.score_day))
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([layout.seed, 3])
    writer: pq.ParquetWriter | None = None
    for lo in range(0, n, EMB_CHUNK):
        part = _embeddings_part(layout, rng, lo, min(n, lo + EMB_CHUNK) - lo)
        if writer is None:
            writer = pq.ParquetWriter(directory / "part-0.parquet", part.schema, compression="zstd")
        writer.write_table(part)
    if writer is not None:
        writer.close()
    return n


def write_model(lake: Lake, seed: int) -> int:
    """Model v1 in the lake, as `quality_model` copies it there: the training asset's recipe
    (`train_model`: production `ModelShape`, 5 members, the full feature set) for one epoch on
    4,000 synthetic rows. Its scores mean little; its shape and cost are production's."""
    from vq_assets.core.model.features import CATEGORICAL, CREATOR_FEATURES, FULL_MODEL, groups_for
    from vq_assets.core.model.inference import save_model
    from vq_assets.core.model.registry import copy_to_lake
    from vq_assets.core.model.settings import ModelShape, TrainSettings
    from vq_assets.core.model.synthetic import make_synthetic
    from vq_assets.core.model.train import train_model

    dense = {"image_emb": EMB_DIM, "text_emb": EMB_DIM, "creator": len(CREATOR_FEATURES)}
    sample = make_synthetic(4_000, seed, dense | {"length": 1}, CATEGORICAL)
    split = np.where(np.arange(len(sample)) < 3_200, "train", "validation")
    groups = groups_for(FULL_MODEL, sample)
    fitted = train_model(sample, split, groups, ModelShape(), TrainSettings(max_epochs=1))
    with tempfile.TemporaryDirectory() as tmp:
        saved = save_model(tmp, fitted.model, fitted.model.config, fitted.normalizer)
        copy_to_lake(saved, lake, 1)
    return sum(p.numel() for p in fitted.model.parameters())


def blip_images_per_s() -> tuple[float | None, str]:
    """Images/s of BLIP base's image tower (ViT-B/16 at 384 px, random weights, bf16, batch
    256) through `BlipEncoder.encode_images`, on already-decoded frames; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None, "no CUDA device"
    from vq_assets.core.embeddings.blip import DEFAULT_CACHE_DIR, BlipEncoder
    from vq_assets.core.embeddings.blip import ensure_placeholder_blip as build

    path = build(DEFAULT_CACHE_DIR / "blip-placeholder-base", size="base")
    encoder = BlipEncoder(path, device="cuda", dtype="bf16", batch_size=256)
    frames = np.random.default_rng(0).integers(0, 256, (8, 384, 384, 3), dtype=np.uint8)
    encoder.encode_images([frames] * 32)  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    started = time.perf_counter()
    encoder.encode_images([frames] * 256)
    torch.cuda.synchronize()
    return 256 * 8 / (time.perf_counter() - started), torch.cuda.get_device_name()


# --------------------------------------------------------------------------------------------
# measuring a worker

MIN_AVAILABLE = 1.5 * 2**30  # the machine's memory a worker may never push below
UNITS = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def limit_bytes(limit: str) -> float:
    """DuckDB's reading of a memory_limit: KB/MB/GB are powers of 1000, KiB/... of 1024."""
    m = re.fullmatch(r"([0-9.]+) ?([A-Za-z%]+)", limit)
    if not m or (m[2].upper() not in UNITS and m[2] != "%"):
        raise ValueError(f"--memory-limit {limit!r}: a number and a unit, e.g. 4GB")
    number, unit = float(m[1]), m[2].upper()
    if unit == "%":
        return number / 100 * _status_kib(Path("/proc/meminfo"), "MemTotal:") * 1024
    return number * UNITS[unit]


def peak_rss_mib() -> float:
    """VmHWM: this process's peak RSS, from exec on (ru_maxrss would inherit the parent's)."""
    return _status_kib(Path("/proc/self/status"), "VmHWM:") / 1024


def _status_kib(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:  # the process has just exited
        pass
    return 0


def _folder_bytes(folder: Path) -> int:
    total = 0
    for f in folder.iterdir():
        try:
            total += f.stat().st_size
        except FileNotFoundError:  # DuckDB removed it meanwhile
            pass
    return total


def watch(proc: subprocess.Popen, cap: float, spill_dir: Path) -> tuple[int, int, str]:
    """Poll `proc` until it exits: (highest RSS seen, largest size of `spill_dir`, why it was
    killed or ""). It is killed past `cap` bytes of RSS, or when the machine's available memory
    falls under MIN_AVAILABLE (other people's jobs share it)."""
    seen_rss, spill, killed = 0, 0, ""
    while proc.poll() is None:
        rss = _status_kib(Path(f"/proc/{proc.pid}/status"), "VmRSS:") * 1024
        seen_rss = max(seen_rss, rss)
        spill = max(spill, _folder_bytes(spill_dir))
        available = _status_kib(Path("/proc/meminfo"), "MemAvailable:") * 1024
        if rss > cap or available < MIN_AVAILABLE:
            killed = f"killed at RSS {rss / 2**30:.1f} GiB (available {available / 2**30:.1f})"
            proc.kill()
        time.sleep(0.25)
    return seen_rss, spill, killed
