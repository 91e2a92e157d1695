"""ViT / DINOv2 image encoder: the class token of a `transformers` ViT-family backbone
(e.g. facebook/dinov2-base, google/vit-base-patch16-224-in21k), by hub id or local path, or a
small placeholder checkpoint built locally when none is configured."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch

from vq_assets.core.embeddings.hf_image import HFImageEncoder
from vq_assets.core.embeddings.media import RESAMPLE
from vq_assets.core.embeddings.placeholder import (
    DEFAULT_CACHE_DIR,
    PLACEHOLDER_INIT_STD,
    ensure_placeholder,
)

Family = Literal["dinov2", "vit"]
FAMILIES: tuple[Family, ...] = ("dinov2", "vit")
PLACEHOLDER_WARNING = (
    "PLACEHOLDER {family} weights (random init, seed {seed}) at {path}: NOT a trained model, "
    "the image embeddings carry no meaning; set image_model to a trained checkpoint "
    "(hub id or local path) for real embeddings"
)


class ViTEncoder(HFImageEncoder):
    """Per frame the class token of the last layer, after the backbone's final layer norm
    (`last_hidden_state[:, 0]`): DINOv2's `pooler_output` exactly, and for ViT the token its
    classifier reads. ViT's own pooler (dense + tanh) is not used: checkpoints saved from
    `ViTForImageClassification` have none, so it would be freshly initialised."""

    model_types = ("dinov2", "dinov2_with_registers", "vit")

    def output_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state[:, 0]


def ensure_placeholder_vit(
    dir: str | os.PathLike[str], family: Family = "dinov2", seed: int = 0
) -> Path:
    """Build (once) a 2-layer, 64-wide randomly initialised `Dinov2Model` or `ViTModel` with
    the matching image processor at 64 px: DINOv2's resize-then-crop (73 → 64, the ratio of its
    256 → 224) or ViT's plain resize."""
    from transformers import (
        BitImageProcessorPil,
        Dinov2Config,
        Dinov2Model,
        ViTConfig,
        ViTImageProcessorPil,
        ViTModel,
    )
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}: {family!r}")
    shape = {
        "image_size": 64,
        "patch_size": 16,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "initializer_range": PLACEHOLDER_INIT_STD,
    }

    def build(tmp: Path) -> None:
        if family == "dinov2":
            model = Dinov2Model(Dinov2Config(**shape, mlp_ratio=2))
            processor = BitImageProcessorPil(
                size={"shortest_edge": 73},
                crop_size={"height": 64, "width": 64},
                resample=RESAMPLE,
                image_mean=IMAGENET_DEFAULT_MEAN,
                image_std=IMAGENET_DEFAULT_STD,
            )
        else:
            model = ViTModel(ViTConfig(**shape, intermediate_size=128))
            processor = ViTImageProcessorPil(size={"height": 64, "width": 64}, resample=RESAMPLE)
        model.eval().save_pretrained(tmp)
        processor.save_pretrained(tmp)

    warning = PLACEHOLDER_WARNING.format(family=family, seed=seed, path=dir)
    return ensure_placeholder(dir, {"seed": seed, "family": family}, build, family, warning)


def load_vit(
    family: Family,
    model: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
    **opts: object,
) -> ViTEncoder:
    """`model` (hub id or path) when given, else the `family` placeholder under `cache_dir`.
    A configured model that cannot be loaded is an error, never a silent placeholder."""
    if model is None:
        model = ensure_placeholder_vit(Path(cache_dir) / f"{family}-placeholder", family)
    return ViTEncoder(model, **opts)
