"""Hostile media URIs and files must not be read, hang or sink the day (DESIGN §5, issue 15).

Each attack used to work on main: absolute, `../` and symlinked URIs read files elsewhere on the
machine, `/dev/zero` read until memory ran out, a named pipe hung the step, huge-pixel images and
frames cost a decode worker ~1.8 GB, a directory or an `http://` URL failed the day. Now every
such video gets a per-video `media_status`, the day succeeds, and every input row is output.
"""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from PIL import Image

from vq_assets.core.embeddings.base import VideoEncoder
from vq_assets.core.embeddings.media import (
    DecodeLimits,
    MediaRefused,
    load_image,
    read_local,
)
from vq_assets.core.embeddings.media_access import LakeMediaReader
from vq_assets.core.embeddings.pipeline import embed_videos, truncate_captions
from vq_assets.core.lake.store import Lake
from vq_assets_tests.core.embeddings.test_media import write_cover, write_video

OUTSIDE = "refused: outside media roots"
NOT_REGULAR = "refused: not a regular file"
OVER_BYTES = "refused: over byte limit"
OVER_PIXELS = "refused: over pixel limit"
# Low limits so that small test files can exceed them; the normal media here are 32-40 px.
MAX_BYTES = 64 * 1024
LIMITS = DecodeLimits(max_pixels=48 * 48, timeout_s=30)


class StubEncoder(VideoEncoder):
    """Mean colour and caption length as 'embeddings': the pipeline's bookkeeping, no model."""

    name, version = "stub", "1"
    image_dim = text_dim = 3
    placeholder = True
    frame_size = 16
    batch_size = 8

    def encode_images(self, stacks: Sequence[np.ndarray]) -> np.ndarray:
        v = np.stack([s.reshape(-1, 3).mean(0) + 1 for s in stacks]).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def encode_texts(self, texts: Sequence[str | None]) -> np.ndarray:
        return np.asarray([[1, 0, 0] if t else [0, 0, 0] for t in texts], np.float32)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` (a decompression bomb's first bytes)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    b = bytearray(buf.getvalue())
    b[16:24] = struct.pack(">II", width, height)  # IHDR data follows signature, length, type
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    return bytes(b)


def _day(rows: list[tuple[str, str | None, str | None]], caption: str = "a caption") -> pa.Table:
    return pa.table(
        {
            "video_id": [r[0] for r in rows],
            "caption": [caption] * len(rows),
            "video_uri": [r[1] for r in rows],
            "thumbnail_uri": [r[2] for r in rows],
        }
    )


@pytest.fixture(scope="module")
def lake_day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, dict[str, str]]:
    root = tmp_path_factory.mktemp("lake")
    media = root / "landing" / "media"
    (media / "videos").mkdir(parents=True)
    outside = tmp_path_factory.mktemp("elsewhere")
    secret = write_cover(outside / "secret.jpg", (250, 250, 250))
    (media / "link.jpg").symlink_to(secret)
    os.mkfifo(media / "pipe.mp4")
    (media / "big.bin").write_bytes(os.urandom(MAX_BYTES + 1))
    (media / "bomb.png").write_bytes(png_declaring(50_000, 50_000))
    (media / "wide.png").write_bytes(png_declaring(5_000, 5_000))
    ok = write_video(media / "videos" / "ok.mp4", n=6)
    huge = write_video(media / "videos" / "huge.mp4", n=3, size=64)
    cover = write_cover(media / "cover.jpg")
    return Lake.local(root), {
        "ok": str(ok),
        "ok_relative": "landing/media/videos/ok.mp4",
        "ok_file_uri": f"file://{ok}",
        "absolute_outside": str(secret),
        "dotdot_escape": f"{media}/../../../{outside.name}/secret.jpg",
        "relative_escape": f"landing/media/../../{outside.name}/secret.jpg",
        "symlink_outside": str(media / "link.jpg"),
        "etc_passwd": "/etc/passwd",
        "dev_zero": "/dev/zero",
        "http": "http://127.0.0.1:9/x.mp4",
        "s3_on_local": "s3://other-bucket/x.jpg",
        "directory": str(media / "videos"),
        "fifo": str(media / "pipe.mp4"),
        "over_bytes": str(media / "big.bin"),
        "png_bomb": str(media / "bomb.png"),
        "png_wide": str(media / "wide.png"),
        "mp4_wide": str(huge),
        "cover": str(cover),
    }


# (video uri key, cover uri key, expected status, has_image)
CASES = {
    "ok": ("ok", None, "ok", True),
    "ok_relative": ("ok_relative", None, "ok", True),
    "ok_file_uri": ("ok_file_uri", None, "ok", True),
    "absolute_outside": (None, "absolute_outside", OUTSIDE, False),
    "dotdot_escape": (None, "dotdot_escape", OUTSIDE, False),
    "relative_escape": (None, "relative_escape", OUTSIDE, False),
    "symlink_outside": (None, "symlink_outside", OUTSIDE, False),
    "etc_passwd": ("etc_passwd", None, OUTSIDE, False),
    "dev_zero": ("dev_zero", None, OUTSIDE, False),
    "http": ("http", None, OUTSIDE, False),
    "s3_on_local": (None, "s3_on_local", OUTSIDE, False),
    "directory": ("directory", None, NOT_REGULAR, False),
    "fifo": ("fifo", None, NOT_REGULAR, False),
    "over_bytes": ("over_bytes", None, OVER_BYTES, False),
    "png_bomb": (None, "png_bomb", OVER_PIXELS, False),
    "png_wide": (None, "png_wide", OVER_PIXELS, False),
    "mp4_wide": ("mp4_wide", None, OVER_PIXELS, False),
    # a refused video rescued by its cover: pixels from the cover, the fault still reported
    "outside_then_cover": ("absolute_outside", "cover", OUTSIDE, True),
}


@pytest.fixture(scope="module")
def embedded(lake_day: tuple[Lake, dict[str, str]]) -> tuple[pa.Table, pa.Table, float]:
    lake, uris = lake_day
    rows = [
        (name, uris[v] if v else None, uris[c] if c else None)
        for name, (v, c, _, _) in CASES.items()
    ]
    videos = _day(rows)
    started = time.monotonic()
    out = embed_videos(
        videos,
        StubEncoder(),
        frames=2,
        read_bytes=LakeMediaReader(lake, max_bytes=MAX_BYTES),
        limits=LIMITS,
        workers=2,
    )
    return videos, out, time.monotonic() - started


@pytest.mark.parametrize("case", list(CASES))
def test_each_attack_gets_its_status(embedded: tuple[pa.Table, pa.Table, float], case: str):
    videos, out, _ = embedded
    assert out.num_rows == videos.num_rows  # the day succeeded with every input row
    row = out.column("video_id").to_pylist().index(case)
    _, _, status, has_image = CASES[case]
    assert out.column("media_status")[row].as_py() == status, out.column("media_error")[row]
    assert out.column("has_image")[row].as_py() is has_image
    if status != "ok":
        assert out.column("media_error")[row].as_py()


def test_the_day_does_not_hang(embedded: tuple[pa.Table, pa.Table, float]) -> None:
    assert embedded[2] < 60  # the FIFO and /dev/zero return at once


def test_refused_before_any_read(lake_day: tuple[Lake, dict[str, str]]) -> None:
    lake, uris = lake_day
    reader = LakeMediaReader(lake)
    for key in ("absolute_outside", "dotdot_escape", "symlink_outside", "dev_zero", "http"):
        with pytest.raises(MediaRefused) as e:
            reader.locate(uris[key])
        assert e.value.status == OUTSIDE


def test_an_allowed_extra_root_still_takes_regular_files_only(
    lake_day: tuple[Lake, dict[str, str]],
) -> None:
    lake, uris = lake_day
    reader = LakeMediaReader(lake, ["landing/media", "/dev"])
    with pytest.raises(MediaRefused) as e:
        reader("/dev/zero")
    assert e.value.status == NOT_REGULAR
    with pytest.raises(MediaRefused) as e:
        read_local("/dev/zero")  # the unconfined default reader is bounded too
    assert e.value.status == NOT_REGULAR
    assert reader(uris["ok_relative"]) == Path(uris["ok"]).read_bytes()


def test_default_pixel_limit_refuses_a_declared_giant(
    lake_day: tuple[Lake, dict[str, str]],
) -> None:
    with pytest.raises(MediaRefused) as e:
        load_image(Path(lake_day[1]["png_wide"]).read_bytes())  # 5000x5000 > 2**24 pixels
    assert e.value.status == OVER_PIXELS


def test_long_caption_truncated_and_counted(lake_day: tuple[Lake, dict[str, str]]) -> None:
    lake, uris = lake_day
    videos = _day([("long", uris["ok"], None), ("short", None, None)], caption="x" * 20_000)
    videos = videos.set_column(1, "caption", pa.array(["é" * 20_000, "short"]))
    cut, count = truncate_captions(videos, 5_000)
    assert count == 1 and cut.column("caption").to_pylist() == ["é" * 5_000, "short"]
    out = embed_videos(videos, StubEncoder(), frames=2, read_bytes=LakeMediaReader(lake), workers=0)
    assert out.num_rows == 2 and out.column("has_text").to_pylist() == [True, True]


def slow_reader(uri: str) -> bytes:
    """A store that stalls on one object (module level: decode workers unpickle it by name)."""
    if "slow" in uri:
        time.sleep(30)
    return read_local(uri)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_stalled_video_times_out_alone(
    lake_day: tuple[Lake, dict[str, str]], workers: int
) -> None:
    uris = lake_day[1]
    videos = _day([("slow", "slow.mp4", None), ("ok", uris["ok"], None)])
    started = time.monotonic()
    out = embed_videos(
        videos,
        StubEncoder(),
        frames=2,
        read_bytes=slow_reader,
        limits=DecodeLimits(timeout_s=1),
        workers=workers,
    )
    assert time.monotonic() - started < 20
    assert out.column("media_status").to_pylist() == ["timeout", "ok"]
    assert out.column("has_image").to_pylist() == [False, True]


@pytest.fixture(scope="module")
def s3_lake(lake_day: tuple[Lake, dict[str, str]]):
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        fs = pafs.S3FileSystem(
            access_key="test",
            secret_key="test",
            endpoint_override=endpoint,
            scheme="http",
            region="us-east-1",
        )
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        cover = Path(lake_day[1]["cover"]).read_bytes()
        for bucket in ("bucket", "other-bucket", "other-prefix"):
            client.create_bucket(Bucket=bucket)
        for bucket, key in (
            ("bucket", "lake/landing/media/covers/ok.jpg"),
            ("bucket", "other-prefix/x.jpg"),
            ("other-bucket", "x.jpg"),
            ("other-prefix", "x.jpg"),
        ):
            client.put_object(Bucket=bucket, Key=key, Body=cover)
        yield Lake("s3://bucket/lake", fs)
    finally:
        server.stop()


S3_CASES = {
    "s3_ok": ("s3://bucket/lake/landing/media/covers/ok.jpg", "ok"),
    "s3_ok_relative": ("landing/media/covers/ok.jpg", "ok"),
    "s3_other_bucket": ("s3://other-bucket/x.jpg", OUTSIDE),
    "s3_other_prefix": ("../other-prefix/x.jpg", OUTSIDE),
    "s3_dotdot_bucket": ("../../other-prefix/x.jpg", OUTSIDE),
    "s3_dotdot_in_uri": ("s3://bucket/lake/landing/media/../../other-prefix/x.jpg", OUTSIDE),
    "s3_absolute": ("/etc/passwd", OUTSIDE),
    "s3_http": ("http://169.254.169.254/latest/meta-data", OUTSIDE),
    "s3_file": ("file:///etc/passwd", OUTSIDE),
    "s3_prefix": ("s3://bucket/lake/landing/media/covers", NOT_REGULAR),
    "s3_missing": ("landing/media/covers/gone.jpg", "no_media"),
}


def test_s3_media_confined_to_the_lake_prefix(s3_lake: Lake) -> None:
    reader = LakeMediaReader(s3_lake)
    for uri, status in S3_CASES.values():
        if status == OUTSIDE:  # refused by the URI alone, before the store is asked
            with pytest.raises(MediaRefused):
                reader.locate(uri)
    videos = _day([(name, None, uri) for name, (uri, _) in S3_CASES.items()])
    out = embed_videos(videos, StubEncoder(), frames=2, read_bytes=reader, workers=1)
    assert out.num_rows == videos.num_rows
    assert out.column("media_status").to_pylist() == [s for _, s in S3_CASES.values()]
    assert out.column("has_image").to_pylist() == [s == "ok" for _, s in S3_CASES.values()]


def test_media_roots_must_match_the_lake(s3_lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="S3 lake"):
        LakeMediaReader(s3_lake, ["/data/media"])
    with pytest.raises(ValueError, match="local lake"):
        LakeMediaReader(Lake.local(tmp_path), ["s3://bucket/media"])
