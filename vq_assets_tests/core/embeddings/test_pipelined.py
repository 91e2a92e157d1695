"""Pipeline-parallel BLIP image tower (GPipe over 2 gloo ranks) against the single process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from vq_assets.core.embeddings.blip import BlipEncoder
from vq_assets.core.embeddings.pipelined import (
    layer_bounds,
    load_stage,
    main,
    single_process_image_features,
    synthetic_pixels,
)
from vq_assets_tests.torchrun import torchrun


@pytest.fixture(scope="module")
def blip(blip_dir: Path) -> BlipEncoder:
    return BlipEncoder(blip_dir, device="cpu", batch_size=64)


@contextmanager
def one_thread() -> Iterator[None]:
    """The reference on one intra-op thread, as the ranks run (OMP_NUM_THREADS=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tower_parameters(blip: BlipEncoder) -> int:
    model = blip.model
    return sum(p.numel() for m in (model.vision_model, model.vision_proj) for p in m.parameters())


def _frames(n: int, seed: int = 0, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_layer_bounds() -> None:
    assert layer_bounds(2, 2) == [0, 1, 2]
    assert layer_bounds(12, 2) == [0, 6, 12]
    assert layer_bounds(24, 5) == [0, 5, 10, 15, 20, 24]
    with pytest.raises(ValueError):
        layer_bounds(2, 3)


def test_stages_hold_only_their_tensors_and_chain_to_the_tower(
    blip_dir: Path, blip: BlipEncoder
) -> None:
    first, last = (load_stage(blip_dir, s, 2) for s in (0, 1))
    assert first.is_first and not first.is_last and len(first.layers) == 1
    assert last.is_last and not last.is_first and last.first_layer == 1
    assert first.num_parameters() + last.num_parameters() == _tower_parameters(blip)
    # the stage's weights are the checkpoint's, not the meta build's leftovers
    ref = blip.model.vision_model.encoder.layers[1].mlp.fc1.weight
    assert torch.equal(last.layers[0].mlp.fc1.weight, ref)
    pixels = blip.pixel_values(_frames(5))
    with torch.no_grad():
        chained = last(first(pixels))
        single = single_process_image_features(blip.model, pixels)
    torch.testing.assert_close(chained, single, rtol=0, atol=0)


def test_synthetic_pixels_are_preprocessed_like_blip_encoder(
    blip_dir: Path, blip: BlipEncoder
) -> None:
    torch.testing.assert_close(
        synthetic_pixels(blip_dir, 3, seed=2), blip.pixel_values(_frames(3, seed=2)), rtol=0, atol=0
    )


def test_single_process_group_runs_the_whole_tower(
    blip_dir: Path, blip: BlipEncoder, tmp_path: Path
) -> None:
    """`python -m ...pipelined` without torchrun: a group of one, one stage = the tower."""
    out, stats = tmp_path / "one.npy", tmp_path / "one.json"
    argv = ["--model", str(blip_dir), "--images", "4", "--microbatches", "2", "--normalise"]
    assert main([*argv, "--out", str(out), "--stats", str(stats)]) == 0
    got = np.load(out)
    np.testing.assert_allclose(
        got, blip.encode_images(list(_frames(4)[:, None])), rtol=1e-5, atol=1e-6
    )
    s = json.loads(stats.read_text())
    assert s["world_size"] == 1 and s["bubble_fraction"] == 0
    assert s["stages"][0]["parameters"] == s["tower_parameters"] == _tower_parameters(blip)


def test_gpipe_two_gloo_ranks_match_one_process(
    blip_dir: Path, blip: BlipEncoder, tmp_path: Path
) -> None:
    # 10 images, 2 micro-batches of 3: two GPipe rounds of 6, the second padded with 2 copies
    n, microbatches, mb = 10, 2, 3
    frames = _frames(n, seed=7)
    pixels = blip.pixel_values(frames)
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    out, stats = tmp_path / "pipelined.npy", tmp_path / "stats.json"
    torchrun(
        "vq_assets.core.embeddings.pipelined",
        [
            "--model",
            str(blip_dir),
            "--pixels",
            str(tmp_path / "pixels.npy"),
            "--microbatches",
            str(microbatches),
            "--microbatch-size",
            str(mb),
            "--device",
            "cpu",
            "--out",
            str(out),
            "--stats",
            str(stats),
        ],
    )
    pipelined = torch.from_numpy(np.load(out))
    assert pipelined.shape == (n, blip.image_dim)

    with torch.no_grad(), one_thread():
        # the projections before L2 normalisation, one process, the whole batch at once
        single = single_process_image_features(blip.model, pixels)
        # ... and in the pipeline's micro-batches (the padded last round included)
        padded = torch.cat([pixels, pixels[-1:].expand(2, *pixels.shape[1:])])
        chunked = torch.cat(
            [single_process_image_features(blip.model, c) for c in padded.split(mb)]
        )[:n]
    # Same micro-batch shapes: bit for bit. Whole batch vs micro-batches: another matmul
    # blocking, so equal to float32 rounding only.
    torch.testing.assert_close(pipelined, chunked, rtol=0, atol=0)
    torch.testing.assert_close(pipelined, single, rtol=1e-5, atol=1e-6)
    # like with like: L2-normalised, they are BlipEncoder's vectors of one-frame videos
    np.testing.assert_allclose(
        torch.nn.functional.normalize(pipelined, dim=-1).numpy(),
        blip.encode_images(list(frames[:, None])),
        rtol=1e-5,
        atol=1e-6,
    )

    s = json.loads(stats.read_text())
    first, last = s["stages"]
    assert s["world_size"] == 2 and s["microbatches"] == microbatches and s["images"] == n
    assert s["bubble_fraction"] == pytest.approx(1 / 3)
    assert (first["rank"], first["layers"], first["embeddings"], first["head"]) == (
        0,
        [0, 1],
        True,
        False,
    )
    assert (last["rank"], last["layers"], last["embeddings"], last["head"]) == (
        1,
        [1, 2],
        False,
        True,
    )
    # each rank held only its stage: the two shares add up to the tower, neither is all of it
    assert first["parameters"] + last["parameters"] == s["tower_parameters"]
    assert s["tower_parameters"] == _tower_parameters(blip)
    assert 0 < first["parameters"] < s["tower_parameters"]
    assert 0 < last["parameters"] < s["tower_parameters"]
