"""Image encoders on `transformers` vision backbones (ViT/DINOv2 in `vit.py`, ResNet in
`resnet.py`): the checkpoint and its image processor loaded with `from_pretrained`, the
processor's steps replayed on the device, frame embeddings mean-pooled per video."""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vq_assets.core.embeddings.base import DTYPES, VideoEncoder, pick_device, resize_square
from vq_assets.core.embeddings.media import RESAMPLE
from vq_assets.core.embeddings.placeholder import checkpoint_version

log = logging.getLogger(__name__)

# ConvNeXT-style processors (ResNet's) only crop below this shortest edge, and warp above it.
CONVNEXT_CROP_BELOW = 384


@dataclass(frozen=True)
class SquarePreprocess:
    """What an image processor does to a square image: resize to `resize`², centre-crop to
    `crop`², multiply by `scale`, then subtract `mean` and divide by `std` per channel."""

    resize: int
    crop: int
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def square_preprocess(ip: object) -> SquarePreprocess:
    """Read `ip`'s resize/crop/rescale/normalise settings (ViT, BiT/DINOv2 and ConvNeXT/ResNet
    processors). The pipeline's decoder hands over square frames, so only square inputs
    matter; `check_against_processor` confirms the reading on a probe image."""
    size = ip.size
    if not ip.do_resize:
        raise ValueError(f"{type(ip).__name__}: processors that do not resize are unsupported")
    if size.shortest_edge:
        side = int(size.shortest_edge)
        crop_pct = getattr(ip, "crop_pct", None)
        if crop_pct and side < CONVNEXT_CROP_BELOW:  # ConvNeXT: resize to side/crop_pct, crop
            resize, crop = int(side / crop_pct), side
        else:
            resize = crop = side
    elif size.height and size.height == size.width:
        resize = crop = int(size.height)
    else:
        raise ValueError(f"{type(ip).__name__}: unsupported resize {size}")
    if getattr(ip, "do_center_crop", False):
        cs = ip.crop_size
        if cs.height != cs.width or cs.height > crop:
            raise ValueError(f"{type(ip).__name__}: unsupported crop {cs} after resize {crop}")
        crop = int(cs.height)
    ones = (1.0, 1.0, 1.0)
    return SquarePreprocess(
        resize=resize,
        crop=crop,
        scale=float(ip.rescale_factor) if ip.do_rescale else 1.0,
        mean=tuple(ip.image_mean) if ip.do_normalize else (0.0, 0.0, 0.0),
        std=tuple(ip.image_std) if ip.do_normalize else ones,
    )


class HFImageEncoder(VideoEncoder):
    """A `transformers` vision backbone (`AutoModel` + its `AutoImageProcessor`) as an image
    encoder; subclasses say which model types they take and which output is the embedding.

    The decoder resizes frames to the processor's resize side (`frame_size`); centre crop,
    rescale and normalisation run on the device, batched, instead of a PIL pass per frame, and
    are checked against the processor itself at load. No text tower (`text_dim == 0`).
    """

    text_dim = 0
    model_types: tuple[str, ...]

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: str = "auto",
        dtype: str = "fp32",
        batch_size: int = 64,
    ) -> None:
        from transformers import AutoImageProcessor, AutoModel

        self.source = os.fspath(model)
        self.name = Path(self.source).name or self.source
        self.device = torch.device(pick_device(device))
        self.dtype = DTYPES[dtype]
        self.batch_size = batch_size
        # PIL backend: the reference the device steps are checked against, without torchvision
        self.processor = AutoImageProcessor.from_pretrained(self.source, backend="pil")
        self.model = AutoModel.from_pretrained(self.source, dtype=self.dtype)
        if self.model.config.model_type not in self.model_types:
            raise ValueError(
                f"{self.source} is a {self.model.config.model_type!r} model, not one of "
                f"{self.model_types} that {type(self).__name__} takes"
            )
        self.model.to(self.device).eval()
        self.placeholder, self.version = checkpoint_version(self.source, self.model.config)
        self.image_dim = self.output_dim()

        self.prep = square_preprocess(self.processor)
        self.frame_size = self.prep.resize
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.prep.mean, device=self.device).view(shape)
        self._std = torch.tensor(self.prep.std, device=self.device).view(shape)
        self.check_against_processor()
        if int(self.processor.resample) != int(RESAMPLE):
            # The decoder resizes with bicubic for every encoder; a bilinear-trained model sees
            # slightly sharper frames than its processor would give it.
            log.warning(
                "%s: its processor resizes with PIL filter %s, the frame decoder with bicubic",
                self.source,
                self.processor.resample,
            )
        log.log(
            logging.WARNING if self.placeholder else logging.INFO,
            "image encoder %s (%s, %s) on %s %s, batch %d%s",
            type(self).__name__,
            self.source,
            self.version,
            self.device,
            dtype,
            batch_size,
            " — PLACEHOLDER weights (random init), NOT a trained model" if self.placeholder else "",
        )

    @abstractmethod
    def output_dim(self) -> int:
        """Width of `features`' output."""

    @abstractmethod
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, image_dim] from normalised [N, 3, crop, crop] pixels."""

    def pixel_values(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] → [N, 3, crop, crop] on the device in the model's dtype, as the
        processor makes them from square frames."""
        return self._normalised(frames).to(self.dtype)

    def _normalised(self, frames: np.ndarray) -> torch.Tensor:
        if frames.shape[1:3] != (self.frame_size, self.frame_size):
            frames = np.stack([resize_square(f, self.frame_size) for f in frames])
        top = (self.prep.resize - self.prep.crop) // 2  # the processor's centre crop offset
        x = torch.from_numpy(frames).to(self.device, non_blocking=True)  # uint8: 4x less to copy
        x = x[:, top : top + self.prep.crop, top : top + self.prep.crop]
        x = x.permute(0, 3, 1, 2).float() * self.prep.scale
        return (x - self._mean) / self._std

    def check_against_processor(self) -> None:
        """Refuse a processor whose settings were misread: on a random frame at the decoder's
        size, the device steps must give the processor's own pixel values."""
        probe = np.random.default_rng(0).integers(0, 256, (1, self.frame_size, self.frame_size, 3))
        probe = probe.astype(np.uint8)
        ref = self.processor(images=list(probe), return_tensors="pt").pixel_values
        ours = self._normalised(probe).cpu()
        if ours.shape != ref.shape or not torch.allclose(ours, ref, atol=1e-4):
            raise ValueError(
                f"{self.source}: {type(self.processor).__name__} {self.prep} does not reproduce "
                f"the processor's pixels ({tuple(ref.shape)}); unsupported image processor"
            )

    @torch.inference_mode()
    def encode_images(self, stacks: Sequence[np.ndarray]) -> np.ndarray:
        return self._pooled_frames(stacks, lambda f: self.features(self.pixel_values(f)))

    def encode_texts(self, texts: Sequence[str | None]) -> np.ndarray:
        return np.zeros((len(texts), 0), np.float32)
