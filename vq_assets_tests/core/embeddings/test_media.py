"""Decoding real mp4/JPEG files written here with PyAV and PIL.

The helpers `write_video` / `write_cover` are reused by the encoder and pipeline tests.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vq_assets.core.embeddings.media import (
    MediaDecodeError,
    load_image,
    load_media,
    read_local,
    sample_frames,
)


def _codec() -> str:
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # PyAV builds without x264 still ship mpeg4
        return "mpeg4"


def index_frame(i: int, size: int = 32) -> np.ndarray:
    """A flat frame whose colour encodes its index (red = i % 16, green = i // 16, step 16)."""
    img = np.zeros((size, size, 3), np.uint8)
    img[..., 0] = (i % 16) * 16
    img[..., 1] = (i // 16) * 16
    return img


def frame_index(frames: np.ndarray) -> list[int]:
    """Inverse of `index_frame` on decoded (lossy) frames."""
    px = frames[:, frames.shape[1] // 2, frames.shape[2] // 2].astype(int)
    return [int(round(r / 16)) + 16 * int(round(g / 16)) for r, g, _ in px]


def write_video(
    path: Path, n: int = 10, *, fps: int = 10, size: int = 32, pattern: str = "index"
) -> Path:
    """An n-frame mp4. `index` frames encode their index; `stripes`/`checks`/`gradient` give
    visibly different videos."""
    rng = np.random.default_rng(n)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(_codec(), rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        yy, xx = np.mgrid[0:size, 0:size]
        for i in range(n):
            if pattern == "index":
                img = index_frame(i, size)
            else:
                base = {
                    "stripes": (xx // 4 % 2) * 255,
                    "checks": ((xx // 8 + yy // 8) % 2) * 255,
                    "gradient": xx * 255 // size,
                }[pattern]
                img = np.stack([base, np.roll(base, i, axis=0), 255 - base], -1).astype(np.uint8)
                img = np.clip(img.astype(int) + rng.integers(-8, 8, img.shape), 0, 255)
                img = img.astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_cover(path: Path, color: tuple[int, int, int] = (200, 30, 30), size: int = 40) -> Path:
    Image.new("RGB", (size, size), color).save(path, format="JPEG")
    return path


def test_frames_sampled_at_segment_centres(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", n=10)
    # 10 frames at 10 fps over 1 s; centres of 8 segments are at (j + 0.5) / 8 s
    expected = [int((j + 0.5) / 8 * 10) for j in range(8)]
    from_bytes = sample_frames(video.read_bytes(), k=8, size=16)
    assert from_bytes.shape == (8, 16, 16, 3) and from_bytes.dtype == np.uint8
    assert frame_index(from_bytes) == expected
    assert frame_index(sample_frames(video, k=8, size=16)) == expected


def test_seek_path_matches_sequential_path(tmp_path: Path) -> None:
    video = write_video(tmp_path / "long.mp4", n=120, fps=10)
    sequential = sample_frames(video, k=6, size=16, seek_min_s=1e9)
    seeking = sample_frames(video, k=6, size=16, seek_min_s=0.0)
    assert frame_index(sequential) == [int((j + 0.5) / 6 * 120) for j in range(6)]
    np.testing.assert_array_equal(seeking, sequential)


def test_stream_without_duration_or_timestamps(tmp_path: Path) -> None:
    if _codec() != "libx264":
        pytest.skip("needs an H.264 encoder")
    path = tmp_path / "raw.h264"  # an elementary stream: no container, no duration, no pts
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(10):
            for packet in stream.encode(av.VideoFrame.from_ndarray(index_frame(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert frame_index(sample_frames(path.read_bytes(), k=4, size=16)) == [1, 3, 6, 8]


def test_fewer_frames_than_k_returns_each_frame_once(tmp_path: Path) -> None:
    frames = sample_frames(write_video(tmp_path / "short.mp4", n=3), k=8, size=16)
    assert frame_index(frames) == [0, 1, 2]


def test_resize_to_rectangle(tmp_path: Path) -> None:
    frames = sample_frames(write_video(tmp_path / "v.mp4"), k=2, size=(24, 20))
    assert frames.shape == (2, 24, 20, 3)


def test_display_rotation_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.mp4"
    img = np.zeros((32, 48, 3), np.uint8)
    img[:, :24] = 255  # stored landscape, left half white
    with av.open(str(path), "w") as container:
        stream = container.add_stream(_codec(), rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.set_display_rotation(90)  # shown turned a quarter counter-clockwise
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frame = sample_frames(path, k=1, size=None)[0]
    assert frame.shape == (48, 32, 3)  # portrait
    assert frame[40:, :, 0].mean() > 200 and frame[:8, :, 0].mean() < 50  # left went to bottom


def test_audio_only_is_a_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(MediaDecodeError, match="no video stream"):
        sample_frames(path)


def test_load_image_resizes_rgb(tmp_path: Path) -> None:
    cover = write_cover(tmp_path / "c.jpg")
    img = load_image(cover.read_bytes())
    assert img.shape == (40, 40, 3)
    assert abs(int(img[0, 0, 0]) - 200) < 8
    assert load_image(cover, size=16).shape == (16, 16, 3)


def test_garbage_bytes_raise() -> None:
    with pytest.raises((MediaDecodeError, av.FFmpegError)):
        sample_frames(b"not a video at all" * 100)


def test_load_media_ok_from_video(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4")
    result = load_media(str(video), str(write_cover(tmp_path / "c.jpg")), k=4, size=16)
    assert (result.status, result.error, result.source) == ("ok", None, "video")
    assert result.frames is not None and result.frames.shape == (4, 16, 16, 3)
    # The cover is decoded too, on its own: the cover-only arm's input.
    assert result.cover is not None and result.cover.shape == (1, 16, 16, 3)


def test_a_bad_cover_beside_a_good_video_is_reported(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4")
    garbage = tmp_path / "c.jpg"
    garbage.write_bytes(b"not a jpeg" * 10)
    result = load_media(str(video), str(garbage), k=4, size=16)
    assert (result.status, result.source, result.cover) == ("decode_error", "video", None)
    assert result.frames is not None and "c.jpg" in (result.error or "")


def test_corrupt_video_falls_back_to_cover(tmp_path: Path) -> None:
    good = write_video(tmp_path / "v.mp4", n=10).read_bytes()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(good[: len(good) // 3])  # truncated: header cut off mid-file
    cover = write_cover(tmp_path / "c.jpg")
    result = load_media(str(corrupt), str(cover), k=4, size=16)
    assert result.status == "decode_error"
    assert result.error and str(corrupt) in result.error
    assert result.source == "cover" and result.frames is not None
    assert result.frames.shape == (1, 16, 16, 3)


def test_missing_video_is_no_media_then_cover(tmp_path: Path) -> None:
    cover = write_cover(tmp_path / "c.jpg")
    result = load_media(str(tmp_path / "gone.mp4"), str(cover), k=4, size=16)
    assert result.status == "no_media" and "gone.mp4" in (result.error or "")
    assert result.source == "cover"


def test_nothing_to_decode(tmp_path: Path) -> None:
    assert load_media(None, None).status == "no_media"
    both_bad = load_media(str(tmp_path / "gone.mp4"), str(tmp_path / "gone.jpg"))
    assert (both_bad.status, both_bad.frames, both_bad.source) == ("no_media", None, None)
    garbage = tmp_path / "g.mp4"
    garbage.write_bytes(b"\x00garbage" * 50)
    worst = load_media(str(garbage), str(tmp_path / "gone.jpg"))
    assert worst.status == "decode_error" and worst.frames is None  # worst fault wins


def test_null_video_uri_uses_cover_without_fault(tmp_path: Path) -> None:
    result = load_media(None, str(write_cover(tmp_path / "c.jpg")), size=16)
    assert (result.status, result.error, result.source) == ("ok", None, "cover")


def test_read_errors_other_than_missing_propagate(tmp_path: Path) -> None:
    def broken(uri: str) -> bytes:
        raise PermissionError(uri)

    with pytest.raises(PermissionError):
        load_media("s3://bucket/v.mp4", None, read_bytes=broken)


def test_read_local_accepts_file_uri(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert read_local(f"file://{f}") == b"abc" == read_local(str(f))
