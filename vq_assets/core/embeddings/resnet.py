"""ResNet image encoder: the globally average-pooled features of a `transformers` ResNet
(e.g. microsoft/resnet-50), by hub id or local path, or a small placeholder checkpoint built
locally when none is configured."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vq_assets.core.embeddings.hf_image import HFImageEncoder
from vq_assets.core.embeddings.media import RESAMPLE
from vq_assets.core.embeddings.placeholder import DEFAULT_CACHE_DIR, ensure_placeholder

PLACEHOLDER_DIRNAME = "resnet-placeholder"
PLACEHOLDER_WARNING = (
    "PLACEHOLDER ResNet weights (random init, seed {seed}) at {path}: NOT a trained ResNet-50, "
    "the image embeddings carry no meaning; set image_model to a trained checkpoint "
    "(e.g. microsoft/resnet-50 or a local copy) for real embeddings"
)


class ResNetEncoder(HFImageEncoder):
    """Per frame `ResNetModel`'s `pooler_output`: the last stage's feature map averaged over
    space (2048-d for ResNet-50), what its ImageNet classifier reads."""

    model_types = ("resnet",)

    def output_dim(self) -> int:
        return int(self.model.config.hidden_sizes[-1])

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).pooler_output.flatten(1)


def ensure_placeholder_resnet(dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build (once) a randomly initialised bottleneck `ResNetModel`, one block per stage and
    16..128 channels wide (ResNet-50's layout at a sliver of its size), with ResNet-50's
    ConvNeXT-style processor at 64 px (resize to 73, crop 64: the ratio of its 256 → 224)."""
    from transformers import ConvNextImageProcessorPil, ResNetConfig, ResNetModel
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    config = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1])

    def build(tmp: Path) -> None:
        ResNetModel(config).eval().save_pretrained(tmp)
        ConvNextImageProcessorPil(
            size={"shortest_edge": 64},
            crop_pct=0.875,  # ResNet-50's: 64 / 0.875 → 73
            resample=RESAMPLE,
            image_mean=IMAGENET_DEFAULT_MEAN,
            image_std=IMAGENET_DEFAULT_STD,
        ).save_pretrained(tmp)

    warning = PLACEHOLDER_WARNING.format(seed=seed, path=dir)
    return ensure_placeholder(dir, {"seed": seed, "family": "resnet"}, build, "ResNet", warning)


def load_resnet(
    model: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
    **opts: object,
) -> ResNetEncoder:
    """`model` (hub id or path) when given, else the placeholder under `cache_dir`. A
    configured model that cannot be loaded is an error, never a silent placeholder."""
    if model is None:
        model = ensure_placeholder_resnet(Path(cache_dir) / PLACEHOLDER_DIRNAME)
    return ResNetEncoder(model, **opts)
