"""ViT/DINOv2 and ResNet image encoders on locally built placeholder checkpoints, loaded through
`from_pretrained` like trained ones."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BitImageProcessorPil,
    ConvNextImageProcessorPil,
    ViTImageProcessorPil,
)

from vq_assets.core.embeddings.hf_image import HFImageEncoder, square_preprocess
from vq_assets.core.embeddings.placeholder import PLACEHOLDER_MARKER
from vq_assets.core.embeddings.resnet import ResNetEncoder, ensure_placeholder_resnet, load_resnet
from vq_assets.core.embeddings.vit import ViTEncoder, ensure_placeholder_vit, load_vit

KINDS = ("dinov2", "vit", "resnet50")
# (encoder class, image_dim, decoder size, crop) of each placeholder
EXPECTED = {
    "dinov2": (ViTEncoder, 64, 73, 64),
    "vit": (ViTEncoder, 64, 64, 64),
    "resnet50": (ResNetEncoder, 128, 73, 64),
}


def build(kind: str, path: Path, seed: int = 0) -> Path:
    if kind == "resnet50":
        return ensure_placeholder_resnet(path, seed)
    return ensure_placeholder_vit(path, kind, seed)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {k: build(k, root / f"{k}-placeholder") for k in KINDS}


@pytest.fixture(scope="module")
def encoders(dirs: dict[str, Path]) -> dict[str, HFImageEncoder]:
    return {k: EXPECTED[k][0](dirs[k], device="cpu", batch_size=4) for k in KINDS}


def _frames(seed: int, n: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _pattern(kind: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    base = {"stripes": (xx // 4 % 2) * 255, "flat": np.full_like(xx, 90)}[kind]
    return np.stack([base, base // 2, 255 - base], -1).astype(np.uint8)[None]


@pytest.mark.parametrize("kind", KINDS)
def test_placeholder_loads_through_from_pretrained_and_says_so(
    kind: str,
    dirs: dict[str, Path],
    encoders: dict[str, HFImageEncoder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, enc = dirs[kind], encoders[kind]
    assert (path / PLACEHOLDER_MARKER).is_file() and (path / "model.safetensors").is_file()
    assert (path / "preprocessor_config.json").is_file()
    assert enc.placeholder and enc.version.startswith("placeholder-seed0-")
    assert enc.ident == f"{path.name}@{enc.version}"
    before = (path / "model.safetensors").stat().st_mtime_ns
    assert build(kind, path) == path  # built once, then reused
    assert (path / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="seed"):
        build(kind, path, seed=1)
    with caplog.at_level(logging.WARNING):
        EXPECTED[kind][0](path, device="cpu")
    assert "PLACEHOLDER" in caplog.text


@pytest.mark.parametrize("kind", KINDS)
def test_dims_norms_and_pooling(kind: str, encoders: dict[str, HFImageEncoder]) -> None:
    enc = encoders[kind]
    _, dim, size, crop = EXPECTED[kind]
    assert (enc.image_dim, enc.text_dim, enc.frame_size, enc.prep.crop) == (dim, 0, size, crop)
    img = enc.encode_images([_frames(0, 1, size), _frames(1, 5, size)])  # 6 frames: 2 batches
    assert img.shape == (2, dim) and img.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    per_frame = enc.encode_images([f[None] for f in _frames(1, 5, size)])
    pooled = per_frame.mean(0) / np.linalg.norm(per_frame.mean(0))
    np.testing.assert_allclose(img[1], pooled, atol=1e-5)
    assert enc.encode_images([]).shape == (0, dim)
    assert enc.encode_texts(["a caption", None]).shape == (2, 0)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_and_inputs_differ(
    kind: str, dirs: dict[str, Path], encoders: dict[str, HFImageEncoder], tmp_path: Path
) -> None:
    enc, size = encoders[kind], EXPECTED[kind][2]
    stacks = [_frames(3, 2, size), _frames(4, 1, size)]
    first = enc.encode_images(stacks)
    np.testing.assert_array_equal(enc.encode_images(stacks), first)
    # the same seed rebuilds the same weights elsewhere; another seed gives other vectors
    again = EXPECTED[kind][0](build(kind, tmp_path / "again"), device="cpu")
    np.testing.assert_array_equal(again.encode_images(stacks), first)
    other = EXPECTED[kind][0](build(kind, tmp_path / "other", seed=1), device="cpu")
    assert not np.allclose(other.encode_images(stacks), first, atol=1e-3)
    a, b = enc.encode_images([_pattern("stripes", size), _pattern("flat", size)])
    assert float(a @ b) < 0.99


@pytest.mark.parametrize("kind", KINDS)
def test_saved_copy_is_no_placeholder_and_gives_the_same_vectors(
    kind: str, encoders: dict[str, HFImageEncoder], tmp_path: Path
) -> None:
    enc = encoders[kind]
    enc.model.save_pretrained(tmp_path / "saved")
    enc.processor.save_pretrained(tmp_path / "saved")
    reloaded = type(enc)(tmp_path / "saved", device="cpu")
    assert not reloaded.placeholder  # the flag follows the marker file, not the weights
    stacks = [_frames(5, 3, enc.frame_size)]
    np.testing.assert_array_equal(reloaded.encode_images(stacks), enc.encode_images(stacks))


@pytest.mark.parametrize("kind", KINDS)
def test_device_pixels_match_the_image_processor(
    kind: str, encoders: dict[str, HFImageEncoder]
) -> None:
    """Square frames of any size: resize, crop and normalise as the checkpoint's processor."""
    enc = encoders[kind]
    frames = _frames(6, 2, size=90)
    expected = enc.processor(
        images=[Image.fromarray(f) for f in frames], return_tensors="pt"
    ).pixel_values
    torch.testing.assert_close(enc.pixel_values(frames), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_embedding_is_the_models_own_output(kind: str, encoders: dict[str, HFImageEncoder]) -> None:
    """One frame through the HF processor and model: DINOv2's pooler output, ViT's class token
    after the final norm, ResNet's pooled features, L2-normalised."""
    enc = encoders[kind]
    frame = _frames(7, 1, enc.frame_size)
    inputs = enc.processor(images=[Image.fromarray(frame[0])], return_tensors="pt")
    with torch.inference_mode():
        out = enc.model(**inputs)
    if kind == "resnet50":
        ref = out.pooler_output.flatten(1)
    elif kind == "dinov2":
        ref = out.pooler_output
    else:
        ref = out.last_hidden_state[:, 0]
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    np.testing.assert_allclose(enc.encode_images([frame]), ref, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_close_to_fp32(
    kind: str, dirs: dict[str, Path], encoders: dict[str, HFImageEncoder]
) -> None:
    half = EXPECTED[kind][0](dirs[kind], device="cpu", dtype="bf16")
    stacks = [_frames(9, 2, EXPECTED[kind][2])]
    assert float(np.sum(half.encode_images(stacks) * encoders[kind].encode_images(stacks))) > 0.98


def test_each_encoder_takes_only_its_model_family(dirs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="'resnet' model"):
        ViTEncoder(dirs["resnet50"], device="cpu")
    with pytest.raises(ValueError, match="'dinov2' model"):
        ResNetEncoder(dirs["dinov2"], device="cpu")


def test_loaders_build_the_placeholder_or_load_the_given_model(
    dirs: dict[str, Path], tmp_path: Path
) -> None:
    dino = load_vit("dinov2", None, tmp_path, device="cpu")
    assert dino.placeholder and Path(dino.source) == tmp_path / "dinov2-placeholder"
    resnet = load_resnet(None, tmp_path, device="cpu")
    assert resnet.placeholder and Path(resnet.source) == tmp_path / "resnet-placeholder"
    given = load_vit("vit", str(dirs["vit"]), tmp_path / "unused", device="cpu")
    assert given.source == str(dirs["vit"]) and not (tmp_path / "unused").exists()
    with pytest.raises((OSError, ValueError)):  # a configured model never falls back
        load_resnet(str(tmp_path / "no" / "such" / "model"), tmp_path, device="cpu")


def test_real_checkpoints_processor_settings_are_read() -> None:
    """The settings of facebook/dinov2-*, microsoft/resnet-50 and google/vit-base-patch16-224
    (their preprocessor_config.json), as (decoder size, crop)."""
    dinov2 = BitImageProcessorPil(
        size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}
    )
    resnet = ConvNextImageProcessorPil(size={"shortest_edge": 224}, crop_pct=0.875)
    vit = ViTImageProcessorPil(size={"height": 224, "width": 224})
    warped = ConvNextImageProcessorPil(size={"shortest_edge": 384})
    for ip, expected in ((dinov2, (256, 224)), (resnet, (256, 224)), (vit, (224, 224))):
        prep = square_preprocess(ip)
        assert (prep.resize, prep.crop) == expected
    assert (square_preprocess(warped).resize, square_preprocess(warped).crop) == (384, 384)
    with pytest.raises(ValueError, match="unsupported resize"):
        square_preprocess(ViTImageProcessorPil(size={"height": 224, "width": 160}))
