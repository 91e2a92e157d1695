"""An encoder that takes images from one encoder and texts from another."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vq_assets.core.embeddings.base import VideoEncoder


class PairedEncoder(VideoEncoder):
    """Images from one encoder, texts from another, behind the same interface.

    The offline default pairs the placeholder BLIP's image tower with a real sentence encoder
    for captions: with random BLIP weights the shared image-text space means nothing anyway, and
    a trained text model is the better caption feature. With a trained BLIP, use BLIP alone.
    """

    def __init__(self, image: VideoEncoder, text: VideoEncoder) -> None:
        self.image, self.text = image, text
        self.name = f"{image.name}+{text.name}"
        self.version = f"{image.version}+{text.version}"
        self.image_dim, self.text_dim = image.image_dim, text.text_dim
        self.placeholder = image.placeholder or text.placeholder
        self.frame_size, self.batch_size = image.frame_size, image.batch_size

    def parts(self) -> dict[str, VideoEncoder]:
        return {"image": self.image, "text": self.text}

    def encode_images(self, stacks: Sequence[np.ndarray]) -> np.ndarray:
        return self.image.encode_images(stacks)

    def encode_texts(self, texts: Sequence[str | None]) -> np.ndarray:
        return self.text.encode_texts(texts)
