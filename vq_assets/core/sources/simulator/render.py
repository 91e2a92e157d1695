"""Media: 64x64 clips at 8 fps whose look follows the topic and production quality.

`render_frames` draws RGB frames from a random stream; the writer draws channel-first planes
(`render_planes`) and encodes them directly (`encode_planes`, `cover_jpeg`), skipping an
interleave per video. Encoding is deterministic: the same frames give the same bytes.
"""

from __future__ import annotations

import io
from functools import cache

import av
import numpy as np
from PIL import Image

from .world import sigmoid

_SIZE = 64
_FPS = 8
_YY, _XX = (g.astype(np.float32) / _SIZE for g in np.mgrid[0:_SIZE, 0:_SIZE])


def _discs(
    cx: np.ndarray, cy: np.ndarray, rx: float, ry: float | np.ndarray | None = None
) -> np.ndarray:
    """Soft-edged ellipse masks, one per frame: (T, H, W) in [0, 1]; ry may vary per frame."""
    ry = np.reshape(rx if ry is None else ry, (-1, 1, 1)).astype(np.float32)
    dx = (_XX - cx[:, None, None]) * np.float32(1 / rx)
    dy = (_YY - cy[:, None, None]) / ry
    dx *= dx
    dy *= dy
    dx += dy  # squared elliptic distance: no sqrt needed for a soft edge
    np.subtract(np.float32(3.5), dx * np.float32(6), out=dx)
    return np.clip(dx, 0, 1, out=dx)


def _paint(frames: np.ndarray, mask: np.ndarray, color: np.ndarray) -> None:
    """Alpha-blend a flat colour into `frames` in place where `mask` is set."""
    diff = color.astype(np.float32) - frames
    diff *= mask[:, None]
    frames += diff


def _color(rng: np.random.Generator, base: tuple[float, float, float]) -> np.ndarray:
    """A jittered colour shaped (3, 1, 1) to broadcast over channel-first images."""
    return np.clip(np.array(base) + rng.normal(0, 0.06, 3), 0, 1).astype(np.float32)[:, None, None]


def render_frames(rng: np.random.Generator, topic: str, quality: float) -> np.ndarray:
    """RGB uint8 frames (T, 64, 64, 3), 12 <= T <= 16, as the simulator renders them.

    The look and motion depend on the topic; a low production quality (a latent ~ N(0, 1))
    makes them blurred, dark, flat and noisy.
    """
    return _interleave(render_planes(rng, topic, quality))


def _interleave(planes: np.ndarray) -> np.ndarray:
    """(T, 3, H, W) -> (T, H, W, 3); per-channel copies beat a strided transpose by ~4x."""
    out = np.empty((planes.shape[0], *planes.shape[2:], 3), planes.dtype)
    for c in range(3):
        out[..., c] = planes[:, c]
    return out


def render_planes(rng: np.random.Generator, topic: str, quality: float) -> np.ndarray:
    """Channel-first uint8 frames (T, 3, H, W); see `render_frames`."""
    n = int(rng.integers(12, 17))
    t = np.arange(n, dtype=np.float32) / _FPS
    # Channel-first while drawing: numpy broadcasts over a size-3 last axis slowly.
    frames = np.empty((n, 3, _SIZE, _SIZE), np.float32)
    phase = rng.uniform(0, 2 * np.pi, 4).astype(np.float32)
    if topic == "talking_head":
        # a mostly static centred face on a flat background
        frames[:] = _color(rng, (0.75, 0.78, 0.82))
        sway = 0.01 * np.sin(2 * np.pi * 0.3 * t + phase[0])
        _paint(
            frames,
            _discs(0.5 + sway, np.full(n, 0.48, np.float32), 0.2, 0.27),
            _color(rng, (0.85, 0.65, 0.5)),
        )
        mouth = 0.02 + 0.01 * np.abs(np.sin(2 * np.pi * 1.5 * t + phase[1]))
        _paint(
            frames,
            _discs(0.5 + sway, np.full(n, 0.6, np.float32), 0.06, mouth),
            _color(rng, (0.4, 0.1, 0.1)),
        )
    elif topic == "dance":
        # neon shapes moving fast on a dark stage
        frames[:] = _color(rng, (0.12, 0.05, 0.2))
        for k, c in enumerate(((1.0, 0.2, 0.8), (0.2, 1.0, 0.9), (1.0, 0.9, 0.2))):
            cx = 0.5 + 0.32 * np.sin(2 * np.pi * 1.3 * t + phase[k] + k)
            cy = 0.5 + 0.28 * np.cos(2 * np.pi * 1.7 * t + phase[k] * 2)
            _paint(frames, _discs(cx, cy, 0.13), _color(rng, c))
    elif topic == "cooking":
        # warm kitchen, a dark pan with food being stirred
        frames[:] = _color(rng, (0.6, 0.38, 0.2)) * (0.85 + 0.15 * np.sin(_YY * 40))
        centre = np.full(n, 0.5, np.float32)
        _paint(frames, _discs(centre, centre, 0.33), _color(rng, (0.15, 0.15, 0.15)))
        for k, c in enumerate(((1.0, 0.6, 0.1), (0.9, 0.85, 0.3), (0.3, 0.7, 0.2))):
            ang = 2 * np.pi * 0.25 * t + phase[k] + 2.1 * k
            _paint(
                frames,
                _discs(0.5 + 0.16 * np.cos(ang), 0.5 + 0.16 * np.sin(ang), 0.08),
                _color(rng, c),
            )
    elif topic == "pets":
        # a furry blob wandering on grass
        frames[:] = _color(rng, (0.35, 0.6, 0.3))
        walk = np.cumsum(rng.normal(0, 0.02, (2, n)), axis=1).astype(np.float32)
        cx, cy = 0.5 + walk[0], 0.55 + walk[1]
        fur = _color(rng, (0.8, 0.6, 0.35))
        _paint(frames, _discs(cx, cy, 0.22, 0.15), fur)
        _paint(frames, _discs(cx + 0.18, cy - 0.12, 0.1), fur * 0.9)
    elif topic == "gaming":
        # high-contrast saturated blocks scrolling, plus a HUD bar
        grid = rng.integers(0, 2, (8, 16, 3)).astype(np.float32)
        shift = (np.floor(t * 8) % 8).astype(np.int64)  # one block per frame
        cols = (np.arange(_SIZE)[None, :] // 8 + shift[:, None]) % 16
        rows = np.arange(_SIZE) // 8
        frames[:] = grid[rows[None, :, None], cols[:, None, :]].transpose(0, 3, 1, 2)
        frames[:, :, :6] = _color(rng, (0.05, 0.05, 0.05))
    elif topic == "travel":
        # sky over sea with a slowly panning mountain skyline
        sky = _color(rng, (0.45, 0.7, 0.95))
        sea = _color(rng, (0.1, 0.4, 0.6))
        frames[:] = sky * (1 - 0.4 * _YY) * (_YY < 0.62) + sea * (_YY >= 0.62)
        ridge = 0.45 + 0.08 * np.sin(8 * (_XX[None, 0, :] + 0.05 * t[:, None]) + phase[0])
        mask = ((_YY[None] > ridge[:, None, :]) & (_YY[None] < 0.62)).astype(np.float32)
        _paint(frames, mask, _color(rng, (0.3, 0.35, 0.3)))
    elif topic == "comedy":
        # bright background, two characters, a jump cut half way
        frames[:] = _color(rng, (1.0, 0.85, 0.2))
        cut = (t >= t[n // 2]).astype(np.float32)
        left = np.full(n, 0.3, np.float32) + 0.4 * cut
        _paint(
            frames, _discs(left, np.full(n, 0.5, np.float32), 0.15), _color(rng, (0.9, 0.3, 0.3))
        )
        _paint(
            frames,
            _discs(1 - left, np.full(n, 0.55, np.float32), 0.13),
            _color(rng, (0.2, 0.4, 0.9)),
        )
    else:  # sports: a green field with white lines and a fast ball
        frames[:] = _color(rng, (0.2, 0.55, 0.2))
        frames[:, :, :, ::16] = 0.95
        x = np.abs(((0.1 + 0.9 * t + phase[0]) % 2) - 1)
        y = np.abs(((0.2 + 0.7 * t + phase[1]) % 2) - 1)
        _paint(frames, _discs(0.1 + 0.8 * x, 0.1 + 0.8 * y, 0.06), np.ones((3, 1, 1), np.float32))

    # Production quality: low = blurred, dark, low-contrast and noisy.
    q = float(sigmoid(1.2 * quality))
    for _ in range((q < 0.45) + (q < 0.25)):  # separable 3x3 box blur, once or twice
        pad = np.pad(frames, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        rows = pad[:, :, :-2] + pad[:, :, 1:-1] + pad[:, :, 2:]
        frames = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
        frames *= np.float32(1 / 9)
    contrast, brightness = 0.55 + 0.45 * q, 0.45 + 0.55 * q
    frames *= np.float32(contrast * brightness * 255)
    frames += np.float32(0.5 * (1 - contrast) * brightness * 255 + 0.5)  # + 0.5: rounds below
    amp = 0.2 * (1 - q) * 255
    if amp > 12:
        noise = rng.random(frames.shape, dtype=np.float32)
        noise -= np.float32(0.5)
        noise *= np.float32(amp)
        frames += noise
    return np.clip(frames, 0, 255, out=frames).astype(np.uint8)


# One thread (tiny frames: threading costs more than it saves), a cheap motion search, and no
# B-frames / lookahead: with a lookahead, x264 gave run-to-run byte differences on these tiny
# frames; without one, identical inputs give identical files.
_X264_OPTIONS = {
    "preset": "veryfast",
    "tune": "zerolatency",
    "threads": "1",
    "crf": "30",
    "x264-params": "subme=1:me=dia:ref=1:trellis=0",
}


@cache
def _video_codec() -> tuple[str, dict[str, str]]:
    """libx264 when this PyAV build has it, else the always-available mpeg4 encoder."""
    try:
        _encode_with("libx264", _X264_OPTIONS, _yuv420p(np.zeros((2, 3, _SIZE, _SIZE), np.uint8)))
        return "libx264", _X264_OPTIONS
    except (av.FFmpegError, ValueError):
        return "mpeg4", {"threads": "1"}


def _yuv420p(planes: np.ndarray) -> np.ndarray:
    """uint8 RGB planes (T, 3, H, W) -> yuv420p frames (T, H * 3 / 2, W), BT.601 limited range.

    Converting here from the planes the renderer draws is much faster than converting
    interleaved rgb24 (strided) with numpy or swscale.
    """
    n, _, h, w = planes.shape
    f = planes.astype(np.float32)
    out = np.empty((n, h * 3 // 2, w), np.uint8)
    out[:, :h] = 0.257 * f[:, 0] + 0.504 * f[:, 1] + 0.098 * f[:, 2] + 16.5
    s = f[:, :, 0::2, 0::2] + f[:, :, 1::2, 0::2] + f[:, :, 0::2, 1::2] + f[:, :, 1::2, 1::2]
    r, g, b = s[:, 0], s[:, 1], s[:, 2]  # 2x2 sums: chroma is subsampled
    u = 0.25 * (-0.148 * r - 0.291 * g + 0.439 * b) + 128.5
    v = 0.25 * (0.439 * r - 0.368 * g - 0.071 * b) + 128.5
    out[:, h : h + h // 4] = u.reshape(n, h // 4, w)
    out[:, h + h // 4 :] = v.reshape(n, h // 4, w)
    return out


def _encode_with(codec: str, options: dict[str, str], frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=_FPS)
        stream.width, stream.height, stream.pix_fmt = _SIZE, _SIZE, "yuv420p"
        stream.options = options
        for i, yuv in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buf.getvalue()


def encode_planes(planes: np.ndarray) -> bytes:
    """Encode channel-first uint8 frames (T, 3, 64, 64) as an mp4 at 8 fps."""
    return _encode_with(*_video_codec(), _yuv420p(planes))


def encode_mp4(frames: np.ndarray) -> bytes:
    """Encode RGB uint8 frames (T, 64, 64, 3) as an mp4 at 8 fps (libx264, else mpeg4)."""
    return encode_planes(np.moveaxis(frames, -1, 1))


def cover_jpeg(planes: np.ndarray) -> bytes:
    """The cover image of channel-first frames (T, 3, H, W): frame 0, as a JPEG."""
    buf = io.BytesIO()
    Image.fromarray(_interleave(planes[:1])[0]).save(buf, format="JPEG", quality=90)
    return buf.getvalue()
