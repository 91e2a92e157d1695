"""The embedding pipeline: a videos table → one row of image and text embeddings per video.

Decoding (PyAV, PIL) runs in worker processes, chunk by chunk, with a bounded number of chunks in
flight; the main process runs the encoder on batch b while the workers already decode batches
b+1, b+2, so the model does not wait on the decoder unless decoding is the slower side. Results
are consumed in submission order, which keeps the output aligned with the input and the run
deterministic.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import pickle
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from contextlib import closing, contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from vq_assets.core.embeddings.base import VideoEncoder, text_present
from vq_assets.core.embeddings.media import (
    DEFAULT_LIMITS,
    MEDIA_STATUSES,
    DecodeLimits,
    MediaResult,
    ReadBytes,
    load_media_many,
    read_local,
)

INPUT_COLUMNS = ("video_id", "caption", "video_uri", "thumbnail_uri")
Progress = Callable[[dict], None]
# Text encoders read a few hundred tokens; a 20 MB caption only costs the tokenizer gigabytes.
DEFAULT_MAX_CAPTION_CHARS = 5_000


def truncate_captions(videos: pa.Table, max_chars: int | None) -> tuple[pa.Table, int]:
    """`videos` with each caption cut to `max_chars` characters, and how many were cut."""
    if max_chars is None or "caption" not in videos.column_names:
        return videos, 0
    caption = videos.column("caption")
    long = pc.greater(pc.utf8_length(caption), max_chars)
    count = pc.sum(long).as_py() or 0
    if not count:
        return videos, 0
    cut = pc.utf8_slice_codeunits(caption, 0, max_chars)
    return videos.set_column(videos.column_names.index("caption"), "caption", cut), count


@dataclass(frozen=True)
class MediaSummary:
    """Videos per `media_status`, the share that counts against `decode_error_share`, and that
    share per day of a multi-day run."""

    counts: dict[str, int]
    error_share: float
    share_by_day: dict[str, float]


def _error_share(statuses: list[str]) -> float:
    # Refusals and timeouts are data problems like corrupt files (hostile or broken URIs, files
    # too large to decode): they count toward the blocking share. Missing media do not.
    bad = sum(1 for s in statuses if s not in ("ok", "no_media"))
    return bad / len(statuses) if statuses else 0.0


def media_summary(statuses: list[str], row_days: list[str], days: list[str]) -> MediaSummary:
    """Summarise an embeddings run's `media_status` column; `row_days` is each row's day."""
    by_day: dict[str, list[str]] = {d: [] for d in days}
    for status, day in zip(statuses, row_days, strict=True):
        by_day.setdefault(day, []).append(status)
    return MediaSummary(
        counts={s: statuses.count(s) for s in MEDIA_STATUSES},
        error_share=_error_share(statuses),
        share_by_day={d: _error_share(s) for d, s in by_day.items()},
    )


def embeddings_schema(image_dim: int, text_dim: int) -> pa.Schema:
    """The output schema. A 0-wide encoder side is an all-null column (parquet cannot round-trip
    non-null fixed_size_list[0] values)."""
    return pa.schema(
        [
            ("video_id", pa.string()),
            ("image_emb", pa.list_(pa.float32(), image_dim)),
            ("text_emb", pa.list_(pa.float32(), text_dim)),
            # The cover alone (zeros without one): the modality study's cover-only input.
            ("cover_emb", pa.list_(pa.float32(), image_dim)),
            ("has_image", pa.bool_()),
            ("has_text", pa.bool_()),
            ("has_cover", pa.bool_()),
            ("image_source", pa.string()),
            ("media_status", pa.string()),
            ("media_error", pa.string()),
            ("encoder", pa.string()),
            ("placeholder", pa.bool_()),
        ]
    )


def _vectors(values: np.ndarray, dim: int) -> pa.Array:
    if dim == 0:
        return pa.nulls(len(values), pa.list_(pa.float32(), 0))
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), dim)


def _decoded(
    items: list[tuple[str | None, str | None]],
    *,
    decode: bool,
    frames: int,
    size: int,
    read_bytes: ReadBytes,
    limits: DecodeLimits,
    workers: int,
    chunk: int,
    max_in_flight: int,
) -> Iterator[MediaResult]:
    """MediaResults in input order, decoded `chunk` videos per task, at most `max_in_flight`
    tasks ahead of the consumer."""
    if not decode:  # text-only encoder: reading media would be wasted work
        skipped = MediaResult(None, "no_media", "not decoded: the encoder has no image tower", None)
        yield from (skipped for _ in items)
        return
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    if workers == 0:
        for c in chunks:
            yield from load_media_many(c, frames, size, read_bytes, limits)
        return
    try:
        pickle.dumps(read_bytes)
    except Exception as e:
        raise TypeError(
            "read_bytes must be picklable to run in decode workers (a function defined in an "
            "importable module, not __main__, or a functools.partial over a picklable "
            "filesystem); or pass workers=0"
        ) from e
    # Not fork: the parent holds torch thread pools (and, under Dagster, other threads) that a
    # forked child would inherit in an undefined state. A fork server preloading media.py
    # forks workers from a clean single-threaded process that already has PyAV/PIL imported.
    # Like spawn, each worker still re-runs the caller's __main__ imports (so scripts need the
    # `if __name__ == "__main__"` guard, and keep heavy imports out of their top level).
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["vq_assets.core.embeddings.media"])
    # Each video stops itself after `limits.timeout_s` (media.deadline); this backstop is for a
    # worker stuck inside C code where that signal cannot reach Python: the step fails, naming
    # it, instead of waiting forever.
    backstop = None if limits.timeout_s is None else 2 * limits.timeout_s * chunk + 60
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    pending: deque[Future[list[MediaResult]]] = deque()
    stuck = False
    try:
        todo = iter(chunks)
        for c in todo:
            pending.append(pool.submit(load_media_many, c, frames, size, read_bytes, limits))
            if len(pending) >= max_in_flight:
                break
        while pending:
            try:
                results = pending.popleft().result(timeout=backstop)
            except FuturesTimeout:
                stuck = True
                raise RuntimeError(
                    f"a decode worker gave no result for {backstop:g} s despite the per-video "
                    f"timeout of {limits.timeout_s:g} s; its workers were killed"
                ) from None
            nxt = next(todo, None)
            if nxt is not None:  # top up before handing results over: keep workers busy
                pending.append(pool.submit(load_media_many, nxt, frames, size, read_bytes, limits))
            yield from results
    finally:
        for f in pending:
            f.cancel()
        if stuck:
            # no public API stops a busy worker before Python 3.14's terminate_workers()
            for proc in list((pool._processes or {}).values()):
                proc.kill()
        pool.shutdown(wait=not stuck, cancel_futures=True)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """At most `n` torch intra-op threads inside the block (never more than the caller set)."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def model_threads(workers: int) -> int:
    """CPU threads left to the model once each decode worker has a core.

    Oversubscribed intra-op threads are far slower than fewer ones (they spin-wait on each
    other), and a small model gains little from threads anyway.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) - workers)


def embed_videos(
    videos: pa.Table,
    encoder: VideoEncoder,
    *,
    frames: int = 8,
    read_bytes: ReadBytes = read_local,
    limits: DecodeLimits = DEFAULT_LIMITS,
    max_caption_chars: int | None = DEFAULT_MAX_CAPTION_CHARS,
    workers: int = 2,
    progress: Progress | None = None,
    progress_every: int = 256,
    prefetch_batches: int = 2,
) -> pa.Table:
    """Embed every row of `videos` (columns video_id, caption, video_uri, thumbnail_uri).

    Image side: `frames` frames sampled from `video_uri`, else the cover `thumbnail_uri`
    (`media.load_media`), encoded and mean-pooled; a video with neither gets a zero vector and
    `has_image=False`. Cover side: the cover alone through the same image tower (`cover_emb`,
    zeros and `has_cover=False` without one). Text side: the caption, zero vector and
    `has_text=False` when missing.
    Output rows follow input order; see `embeddings_schema` for the columns.

    Media are bounded per video by `read_bytes` (where and how much it reads: the asset passes a
    `media_access.LakeMediaReader`) and `limits` (pixels, decode time); a video over a bound gets
    its `media_status` and the run goes on. Captions are cut to `max_caption_chars`.

    `workers` decode processes (0 = decode inline, for debugging); `read_bytes` must then be
    picklable. `progress` gets {"done", "total", "videos_per_s", "eta_s", "elapsed_s"} every
    `progress_every` videos and once at the end.
    """
    missing = [c for c in INPUT_COLUMNS if c not in videos.column_names]
    if missing:
        raise ValueError(f"videos table lacks columns {missing}")
    videos, _ = truncate_captions(videos, max_caption_chars)
    n = videos.num_rows
    ids: list[str] = videos.column("video_id").to_pylist()
    captions: list[str | None] = videos.column("caption").to_pylist()
    items = list(
        zip(
            videos.column("video_uri").to_pylist(),
            videos.column("thumbnail_uri").to_pylist(),
            strict=True,
        )
    )

    # One encoder call per batch of videos whose frames fill about one forward pass; decode tasks
    # are smaller so that one batch is spread over all workers.
    batch_videos = max(1, encoder.batch_size // frames) if encoder.image_dim else encoder.batch_size
    chunk = max(1, math.ceil(batch_videos / max(workers, 1)))
    decoded = _decoded(
        items,
        decode=encoder.image_dim > 0,
        frames=frames,
        size=encoder.frame_size,
        read_bytes=read_bytes,
        limits=limits,
        workers=workers,
        chunk=chunk,
        max_in_flight=max(workers, prefetch_batches * math.ceil(batch_videos / chunk)),
    )

    image = np.zeros((n, encoder.image_dim), np.float32)
    cover = np.zeros((n, encoder.image_dim), np.float32)
    text = np.zeros((n, encoder.text_dim), np.float32)
    has_image = np.zeros(n, bool)
    has_cover = np.zeros(n, bool)
    media: list[tuple[str | None, str, str | None]] = []  # no frames kept: memory stays flat
    start = time.perf_counter()
    next_report = progress_every

    def report(done: int) -> None:
        elapsed = time.perf_counter() - start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (n - done) / rate if rate > 0 else None
        progress(
            {"done": done, "total": n, "videos_per_s": rate, "eta_s": eta, "elapsed_s": elapsed}
        )

    decoders = workers if encoder.image_dim else 0
    # closing the generator shuts the worker pool down, also on error
    with closing(decoded), _torch_threads(model_threads(decoders)):
        for lo in range(0, n, batch_videos):
            hi = min(n, lo + batch_videos)
            batch = [next(decoded) for _ in range(lo, hi)]
            media.extend((m.source, m.status, m.error) for m in batch)
            with_pixels = [i for i, m in enumerate(batch) if m.frames is not None]
            if with_pixels:
                rows = np.asarray(with_pixels) + lo
                image[rows] = encoder.encode_images([batch[i].frames for i in with_pixels])
                has_image[rows] = True
            with_cover = [i for i, m in enumerate(batch) if m.cover is not None]
            if with_cover:
                rows = np.asarray(with_cover) + lo
                cover[rows] = encoder.encode_images([batch[i].cover for i in with_cover])
                has_cover[rows] = True
            text[lo:hi] = encoder.encode_texts(captions[lo:hi])
            if progress is not None and (hi >= next_report or hi == n):
                report(hi)
                next_report = hi + progress_every

    return _table(
        ids, image, text, cover, has_image, text_present(captions), has_cover, media, encoder
    )


def _table(
    ids: Sequence[str],
    image: np.ndarray,
    text: np.ndarray,
    cover: np.ndarray,
    has_image: np.ndarray,
    has_text: np.ndarray,
    has_cover: np.ndarray,
    media: Sequence[tuple[str | None, str, str | None]],
    encoder: VideoEncoder,
) -> pa.Table:
    n = len(ids)
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            _vectors(image, encoder.image_dim),
            _vectors(text, encoder.text_dim),
            _vectors(cover, encoder.image_dim),
            pa.array(has_image, pa.bool_()),
            pa.array(has_text, pa.bool_()),
            pa.array(has_cover, pa.bool_()),
            pa.array([m[0] for m in media], pa.string()),
            pa.array([m[1] for m in media], pa.string()),
            pa.array([m[2] for m in media], pa.string()),
            pa.array([encoder.ident] * n, pa.string()),
            pa.array([encoder.placeholder] * n, pa.bool_()),
        ],
        schema=embeddings_schema(encoder.image_dim, encoder.text_dim),
    )
