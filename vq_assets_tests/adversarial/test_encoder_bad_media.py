"""Corrupt and oversized media under every `transformers` encoder (DESIGN §5): decoding is
bounded by the pixel limit before any model sees a frame, and each bad video gets its own
`media_status` while the rest of the day is embedded."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from vq_assets.core.embeddings.base import VideoEncoder
from vq_assets.core.embeddings.bert import load_bert
from vq_assets.core.embeddings.media import DecodeLimits
from vq_assets.core.embeddings.paired import PairedEncoder
from vq_assets.core.embeddings.pipeline import embed_videos
from vq_assets.core.embeddings.resnet import load_resnet
from vq_assets.core.embeddings.vit import load_vit
from vq_assets_tests.adversarial.test_media_attacks import png_declaring
from vq_assets_tests.core.embeddings.test_media import write_cover, write_video

OVER_PIXELS = "refused: over pixel limit"
# (video, cover, status, image source): corrupt and oversized pictures beside healthy ones
CASES = {
    "ok": ("ok.mp4", None, "ok", "video"),
    "corrupt_clip": ("corrupt.mp4", None, "decode_error", None),
    "corrupt_clip_good_cover": ("corrupt.mp4", "cover.jpg", "decode_error", "cover"),
    "garbage_cover": (None, "garbage.jpg", "decode_error", None),
    "truncated_cover": (None, "truncated.jpg", "decode_error", None),
    "bomb_cover": (None, "bomb.png", OVER_PIXELS, None),
    "wide_clip": ("wide.mp4", None, OVER_PIXELS, None),
    "cover_only": (None, "cover.jpg", "ok", "cover"),
}
LIMITS = DecodeLimits(max_pixels=48 * 48, timeout_s=30)  # the healthy media here are 32-40 px


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_video(root / "ok.mp4", n=6)
    (root / "corrupt.mp4").write_bytes(write_video(root / "c.mp4", n=6).read_bytes()[:300])
    write_video(root / "wide.mp4", n=3, size=64)  # 4096 px per frame > the limit
    write_cover(root / "cover.jpg")
    (root / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(4_000))
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 200, 30)).save(buf, format="JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[:200])  # a valid header, no pixels
    (root / "bomb.png").write_bytes(png_declaring(50_000, 50_000))
    return root


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> VideoEncoder:
    return load_bert(None, tmp_path_factory.mktemp("bert"), device="cpu", batch_size=4)


def _videos(root: Path) -> pa.Table:
    return pa.table(
        {
            "video_id": list(CASES),
            "caption": [f"caption of {name}" for name in CASES],
            "video_uri": [str(root / v) if v else None for v, _, _, _ in CASES.values()],
            "thumbnail_uri": [str(root / c) if c else None for _, c, _, _ in CASES.values()],
        }
    )


@pytest.mark.parametrize("kind", ["dinov2", "vit", "resnet50"])
def test_bad_media_get_per_video_statuses(
    kind: str, media: Path, text: VideoEncoder, tmp_path: Path
) -> None:
    opts = {"device": "cpu", "batch_size": 4}
    image = (
        load_resnet(None, tmp_path, **opts)
        if kind == "resnet50"
        else load_vit(kind, None, tmp_path, **opts)
    )
    enc = PairedEncoder(image, text)
    videos = _videos(media)
    out = embed_videos(videos, enc, frames=3, limits=LIMITS, workers=1)
    assert out.column("video_id").to_pylist() == list(CASES)  # every row, in order
    rows = out.to_pylist()
    for row, (name, (_, _, status, source)) in zip(rows, CASES.items(), strict=True):
        assert row["media_status"] == status, (name, row["media_error"])
        assert row["image_source"] == source, name
        assert row["has_image"] is (source is not None), name
        assert (row["media_error"] is None) is (status == "ok"), name
        image_norm = np.linalg.norm(np.asarray(row["image_emb"], np.float32))
        assert image_norm == pytest.approx(1.0 if source else 0.0, abs=1e-5), name
        assert np.linalg.norm(np.asarray(row["text_emb"], np.float32)) == pytest.approx(1.0)
        assert row["placeholder"] is True
    # the pictures that did decode were embedded by this encoder, and differ
    ok, cover = (np.asarray(r["image_emb"], np.float32) for r in (rows[0], rows[-1]))
    assert len(ok) == image.image_dim and float(ok @ cover) < 0.999
