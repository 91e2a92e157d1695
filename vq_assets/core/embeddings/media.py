"""Decoding a video's pixels: K frames sampled over its duration, else its cover image.

Nothing here imports torch: these functions run in decode worker processes (see `pipeline.py`),
so a worker starts fast and stays small. Bytes are read through an injected `read_bytes(uri)` so
the caller decides how local paths and s3:// URIs are reached (`media_access.LakeMediaReader`
confines them to the media roots); `FileNotFoundError` from it means the media is missing,
`MediaRefused` that it may not be read, any other read error propagates (a flaky store should
fail the run loudly rather than silently turn into "no image").

Hostile inputs are bounded: reads take regular files only, up to a byte limit; images and video
streams above a pixel limit are refused before decoding; each video gets a wall-clock budget.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, get_args

import av
import numpy as np
from PIL import Image, ImageOps

MediaStatus = Literal[
    "ok",
    "no_media",
    "decode_error",
    "refused: outside media roots",
    "refused: not a regular file",
    "refused: over byte limit",
    "refused: over pixel limit",
    "timeout",
]
MEDIA_STATUSES: tuple[MediaStatus, ...] = get_args(MediaStatus)
ImageSource = Literal["video", "cover"]
ReadBytes = Callable[[str], bytes]
Source = bytes | str | os.PathLike[str]

# Longer clips are sampled by seeking to each target time (decoding from the previous keyframe);
# shorter ones are decoded once front to back, which is cheaper than K seeks.
SEEK_MIN_S = 20.0

# CLIP/BLIP processors resize with bicubic; frames resized here must match what they would do.
RESAMPLE = Image.Resampling.BICUBIC

# Defaults of the limits (the `video_embeddings` config overrides them). A short video is rarely
# above 100 MB; 2**24 pixels admits 4K frames and 12 MP phone covers, while an 8000x8000 frame
# (64 MP) cost a decode worker ~1.8 GB; a healthy video decodes in well under a second.
DEFAULT_MAX_BYTES = 256 * 2**20
DEFAULT_MAX_PIXELS = 2**24
DEFAULT_TIMEOUT_S = 60.0


class MediaDecodeError(ValueError):
    """The bytes were read but hold no decodable picture."""


class MediaRefused(Exception):
    """The media may not be read or decoded; `status` is the per-video status it gets."""

    def __init__(self, status: MediaStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class MediaTimeout(Exception):
    """The video's decode budget ran out."""


@dataclass(frozen=True)
class DecodeLimits:
    """Per-video limits of the decode workers; `timeout_s=None` means no time limit."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    timeout_s: float | None = DEFAULT_TIMEOUT_S


DEFAULT_LIMITS = DecodeLimits()


def read_file(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """A regular file's bytes, refusing anything else or more than `max_bytes`.

    Opened non-blocking so that a named pipe cannot hang the caller, and checked on the open
    descriptor (not the path) so that what is read is what was checked; at most `max_bytes + 1`
    bytes are read, so a file growing after the check is still bounded.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MediaRefused("refused: not a regular file", f"{path} is not a regular file")
        if st.st_size > max_bytes:
            raise MediaRefused("refused: over byte limit", f"{path}: {st.st_size} > {max_bytes} B")
        data = os.read(fd, max_bytes + 1)
        while len(data) <= max_bytes and (more := os.read(fd, max_bytes + 1 - len(data))):
            data += more  # os.read may return less than asked
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise MediaRefused("refused: over byte limit", f"{path}: more than {max_bytes} B")
    return data


def read_local(uri: str) -> bytes:
    """Default `read_bytes`: a local path or file:// URI, regular files up to the default byte
    limit, anywhere on the machine (for tests and scripts; the asset confines media to its roots
    with `media_access.LakeMediaReader`)."""
    return read_file(uri.removeprefix("file://"))


def check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    """Refuse a picture before it is decoded: memory grows with its pixel count."""
    if width * height > max_pixels:
        raise MediaRefused(
            "refused: over pixel limit", f"{what} {width}x{height} > {max_pixels} pixels"
        )


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise `MediaTimeout` in the block once `seconds` have passed.

    A SIGALRM timer: decode workers run load_media in their main thread, and PyAV hands control
    back to Python between frames, so a slow decode is interrupted there. Off the main thread
    (inline decoding inside a threaded caller) signals cannot be used and there is no limit.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise MediaTimeout(f"decode took more than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _resize(img: Image.Image, size: int | tuple[int, int] | None) -> np.ndarray:
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        if img.size != (w, h):
            img = img.resize((w, h), RESAMPLE)
    return np.asarray(img, dtype=np.uint8)


def _open(data: Source) -> av.container.InputContainer:
    return av.open(io.BytesIO(data) if isinstance(data, bytes | bytearray) else os.fspath(data))


def _video_stream(container: av.container.InputContainer) -> av.VideoStream:
    if not container.streams.video:
        raise MediaDecodeError("no video stream")
    return container.streams.video[0]


def _upright(frame: av.VideoFrame) -> Image.Image:
    """The frame as shown to viewers: phone videos are often stored sideways with a display
    rotation (counter-clockwise degrees), which PIL's `rotate` applies the same way."""
    img = frame.to_image()
    return img.rotate(frame.rotation, expand=True) if frame.rotation else img


def _frame_time(frame: av.VideoFrame, index: int, rate: Fraction | None) -> float:
    if frame.time is not None:
        return frame.time
    return index / float(rate) if rate else float(index)


def _start_s(stream: av.VideoStream) -> float:
    tb = stream.time_base
    return float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0


def _header_timing(container: av.container.InputContainer) -> tuple[float, float] | None:
    """(start, duration) in seconds of the first video stream, if the headers say."""
    stream = _video_stream(container)
    if stream.duration and stream.time_base:
        return _start_s(stream), float(stream.duration * stream.time_base)
    if container.duration:
        return _start_s(stream), container.duration / av.time_base
    return None


def _scan(container: av.container.InputContainer) -> tuple[tuple[float, float] | None, int]:
    """((start, duration) or None, packet count) from demuxing alone, which is cheap."""
    stream = _video_stream(container)
    tb = stream.time_base
    end = None
    count = 0
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's end-of-stream flush packet
            continue
        count += 1
        if packet.pts is not None and tb:
            t = float((packet.pts + (packet.duration or 0)) * tb)
            end = t if end is None else max(end, t)
    start = _start_s(stream)
    return ((start, end - start) if end is not None and end > start else None), count


def _pick_sequential(
    container: av.container.InputContainer, targets: np.ndarray, by_index: bool = False
) -> list[av.VideoFrame]:
    """Decode front to back; for each target keep the frame on screen then (the last one
    starting at or before it). Targets are times in seconds, or frame positions `by_index`.
    """
    picked: list[av.VideoFrame] = []
    prev: av.VideoFrame | None = None
    stream = _video_stream(container)
    rate = stream.average_rate
    j = 0
    for i, frame in enumerate(container.decode(stream)):
        t = i if by_index else _frame_time(frame, i, rate)
        while j < len(targets) and t > targets[j]:
            picked.append(prev if prev is not None else frame)
            j += 1
        if j == len(targets):
            break
        prev = frame
    if prev is not None:
        picked.extend([prev] * (len(targets) - len(picked)))  # targets past the last frame
    return picked


def _pick_seeking(
    container: av.container.InputContainer, targets: np.ndarray
) -> list[av.VideoFrame]:
    """Seek to the keyframe before each target, then decode to the frame on screen at it."""
    picked: list[av.VideoFrame] = []
    stream = _video_stream(container)
    for target in targets:
        container.seek(int(target / stream.time_base), stream=stream, backward=True)
        chosen: av.VideoFrame | None = None
        for frame in container.decode(stream):
            # without timestamps the keyframe seeked to is the best estimate
            if chosen is not None and (frame.time is None or frame.time > target):
                break
            chosen = frame
        if chosen is not None:
            picked.append(chosen)
    return picked


def sample_frames(
    data: Source,
    k: int = 8,
    size: int | tuple[int, int] | None = 224,
    *,
    seek_min_s: float = SEEK_MIN_S,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """K frames at the centres of K equal segments of the video, upright, resized to `size`
    (square if an int, (H, W) if a tuple, native if None).

    Returns uint8 [k', H, W, 3] with k' <= k: a clip with fewer distinct frames than K gives each
    distinct frame once (no repeats, so a mean over frames is not skewed). Raises
    `MediaDecodeError` (or a PyAV error) when nothing decodable is found, `MediaRefused` when
    the stream's frames (or a decoded frame) exceed `max_pixels`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    with _open(data) as container:
        stream = _video_stream(container)
        check_pixels(stream.width, stream.height, max_pixels, "video frames")
        timing = _header_timing(container)
        if timing is not None:
            return _to_array(_pick(container, timing, 0, k, seek_min_s), size, max_pixels)
        # No duration in the headers (raw streams, some live recordings): scan the packets,
        timing, count = _scan(container)
    with _open(data) as container:  # then decode afresh (not every input can seek back)
        return _to_array(_pick(container, timing, count, k, seek_min_s), size, max_pixels)


def _pick(
    container: av.container.InputContainer,
    timing: tuple[float, float] | None,
    count: int,
    k: int,
    seek_min_s: float,
) -> list[av.VideoFrame]:
    centres = (np.arange(k) + 0.5) / k  # of K equal segments, as fractions of the clip
    if timing is None:  # no timestamps at all: spread over frame positions instead
        return _pick_sequential(container, centres * count, by_index=True)
    start, duration = timing
    targets = start + centres * duration
    if duration >= seek_min_s:
        return _pick_seeking(container, targets)
    return _pick_sequential(container, targets)


def _to_array(
    frames: list[av.VideoFrame], size: int | tuple[int, int] | None, max_pixels: int
) -> np.ndarray:
    unique: dict[int, av.VideoFrame] = {}
    for frame in frames:  # two targets can land on one frame; keep it once, in order
        unique.setdefault(frame.pts if frame.pts is not None else id(frame), frame)
    if not unique:
        raise MediaDecodeError("no decodable video frames")
    for frame in unique.values():  # a stream whose headers understate its frame size
        check_pixels(frame.width, frame.height, max_pixels, "video frame")
    return np.stack([_resize(_upright(f), size) for f in unique.values()])


def load_image(
    data: Source,
    size: int | tuple[int, int] | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """A cover image as uint8 [H, W, 3] RGB (EXIF orientation applied), resized if `size`.
    Its declared size is checked against `max_pixels` before any pixel is decoded."""
    src = io.BytesIO(data) if isinstance(data, bytes | bytearray) else os.fspath(data)
    try:
        opened = Image.open(src)  # lazy: reads the header only
    except Image.DecompressionBombError as e:  # PIL's own, far higher, limit
        raise MediaRefused("refused: over pixel limit", f"image: {e}") from e
    with opened as img:
        check_pixels(img.width, img.height, max_pixels, "image")
        img = ImageOps.exif_transpose(img)
        return _resize(img.convert("RGB"), size)


@dataclass(frozen=True)
class MediaResult:
    """What could be decoded for one video.

    `frames` is uint8 [k', H, W, 3] (a cover counts as one frame) or None when neither source
    gave pixels; `cover` is the cover alone, [1, H, W, 3], whenever it decodes (the modality
    study's cover-only arm needs it beside the frames). `status` reports the worst fault met on
    the way, `timeout` > `refused: ...` > `decode_error` > `no_media` > `ok`, so a corrupt or
    refused video rescued by its cover is still flagged; a null URI is not a fault (the
    contract allows it), a URI whose file is missing is. `error` names every fault.
    """

    frames: np.ndarray | None
    status: MediaStatus
    error: str | None
    source: ImageSource | None
    cover: np.ndarray | None = None


_RANK: dict[MediaStatus, int] = {
    "ok": 0,
    "no_media": 1,
    "decode_error": 2,
    **{s: 3 for s in MEDIA_STATUSES if s.startswith("refused")},
    "timeout": 4,
}


def load_media(
    video_uri: str | None,
    thumbnail_uri: str | None,
    *,
    k: int = 8,
    size: int | tuple[int, int] = 224,
    read_bytes: ReadBytes = read_local,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> MediaResult:
    """Frames from the video, else the cover, else none (the caller falls back to the caption);
    and the cover on its own.

    Reading and decoding both sources share one `limits.timeout_s` budget; when it runs out the
    video gets `timeout` and no pixels.
    """
    try:
        with deadline(limits.timeout_s):
            return _load_media(video_uri, thumbnail_uri, k, size, read_bytes, limits.max_pixels)
    except MediaTimeout as e:
        return MediaResult(None, "timeout", str(e), None)


def _load_media(
    video_uri: str | None,
    thumbnail_uri: str | None,
    k: int,
    size: int | tuple[int, int],
    read_bytes: ReadBytes,
    max_pixels: int,
) -> MediaResult:
    status: MediaStatus = "ok"
    errors: list[str] = []

    def fault(kind: MediaStatus, msg: str) -> None:
        nonlocal status
        status = kind if _RANK[kind] > _RANK[status] else status
        errors.append(msg)

    def attempt(
        source: ImageSource, uri: str | None, decode: Callable[[bytes], np.ndarray]
    ) -> np.ndarray | None:
        if not uri:
            return None
        try:
            data = read_bytes(uri)
        except FileNotFoundError:
            fault("no_media", f"{source} not found: {uri}")
            return None
        except MediaRefused as e:
            fault(e.status, f"{source} {uri}: {e}")
            return None
        try:
            return decode(data)
        except MediaRefused as e:
            fault(e.status, f"{source} {uri}: {e}")
        except MediaTimeout:
            raise
        except Exception as e:  # any decoder failure is data about this video, not a crash
            fault("decode_error", f"{source} {uri}: {type(e).__name__}: {e}")
        return None

    video = attempt("video", video_uri, lambda b: sample_frames(b, k, size, max_pixels=max_pixels))
    # The cover is read even when the video decodes: it has its own vector (`cover_emb`).
    cover = attempt(
        "cover", thumbnail_uri, lambda b: load_image(b, size, max_pixels=max_pixels)[None]
    )
    if video is not None:
        return MediaResult(video, status, "; ".join(errors) or None, "video", cover)
    if cover is not None:
        return MediaResult(cover, status, "; ".join(errors) or None, "cover", cover)
    if not video_uri and not thumbnail_uri:
        fault("no_media", "no video_uri or thumbnail_uri")
    return MediaResult(None, status, "; ".join(errors), None)


def load_media_many(
    items: Sequence[tuple[str | None, str | None]],
    k: int,
    size: int | tuple[int, int],
    read_bytes: ReadBytes,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> list[MediaResult]:
    """`load_media` over a chunk of (video_uri, thumbnail_uri): the unit a decode worker runs."""
    return [
        load_media(v, t, k=k, size=size, read_bytes=read_bytes, limits=limits) for v, t in items
    ]
