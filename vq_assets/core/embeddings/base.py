"""The encoder interface: a video's frames and caption → vectors, plus helpers shared by the
encoders behind it (`blip`, `minilm`, `paired`)."""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vq_assets.core.embeddings.media import RESAMPLE

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def pick_device(device: str = "auto") -> str:
    """`auto` → the first CUDA device when present, else CPU; anything else is passed through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def text_present(texts: Sequence[str | None]) -> np.ndarray:
    """bool [B]: which texts get a real text embedding (None and blank ones get zeros)."""
    return np.array([t is not None and t.strip() != "" for t in texts], dtype=bool)


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def resize_square(frame: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize((size, size), RESAMPLE))


def checkpoint_fingerprint(path: Path) -> str:
    """Short hash of a local checkpoint's config plus weight file names and sizes.

    Cheap (no pass over gigabytes of weights) yet changes whenever the checkpoint is replaced by
    one with another config or other weight files.
    """
    h = hashlib.sha256()
    if not path.is_dir():
        h.update(os.fspath(path).encode())
        return h.hexdigest()[:12]
    for f in sorted(path.iterdir()):
        if f.suffix == ".json":
            h.update(f.name.encode() + f.read_bytes())
        elif f.suffix in {".safetensors", ".bin"}:
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:12]


class VideoEncoder(ABC):
    """Turns frame stacks and captions into L2-normalised vectors.

    `image_dim == 0` means the encoder has no image tower (`frame_size` is then 0 and the
    pipeline skips decoding). `placeholder` is True when the weights are not a trained model.
    `batch_size` is the most items (frames or texts) in one forward pass.
    """

    name: str
    version: str
    image_dim: int
    text_dim: int
    placeholder: bool
    frame_size: int
    batch_size: int

    @property
    def ident(self) -> str:
        """`name@version`, stored with every embedding row."""
        return f"{self.name}@{self.version}"

    def parts(self) -> dict[str, VideoEncoder]:
        """The encoder behind each modality ("image", "text"): itself unless it pairs two."""
        return {"image": self, "text": self}

    def describe(self) -> dict[str, dict[str, object]]:
        """Per modality: the encoder's name, version (fingerprint) and placeholder flag."""
        return {
            m: {"name": e.name, "version": e.version, "placeholder": e.placeholder}
            for m, e in self.parts().items()
        }

    @abstractmethod
    def encode_images(self, stacks: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [B, image_dim]: per video the mean of its frame embeddings, L2-normalised.

        Each stack is uint8 [k, H, W, 3] with k >= 1.
        """

    def _pooled_frames(
        self, stacks: Sequence[np.ndarray], embed: Callable[[np.ndarray], torch.Tensor]
    ) -> np.ndarray:
        """`encode_images` for a tower: `embed` maps up to `batch_size` frames (uint8
        [n, H, W, 3]) to [n, d]; each frame's vector is L2-normalised, then mean-pooled per
        stack and normalised again."""
        if not stacks:
            return np.zeros((0, self.image_dim), np.float32)
        counts = [len(s) for s in stacks]
        if min(counts) < 1:
            raise ValueError("every frame stack needs at least one frame")
        frames = np.concatenate(stacks)
        per_frame = torch.cat(
            [
                l2_normalise(embed(frames[i : i + self.batch_size]))
                for i in range(0, len(frames), self.batch_size)
            ]
        )
        pooled = torch.stack([f.mean(0) for f in torch.split(per_frame, counts)])
        return l2_normalise(pooled).cpu().numpy()

    @abstractmethod
    def encode_texts(self, texts: Sequence[str | None]) -> np.ndarray:
        """float32 [B, text_dim], L2-normalised; rows where `text_present` is False are zeros."""

    def _texts_in_batches(
        self,
        texts: Sequence[str | None],
        embed: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
    ) -> np.ndarray:
        """Tokenise the present texts `batch_size` at a time, `embed` each batch of tokens, and
        L2-normalise; absent texts stay zero vectors. Needs `tokenizer`, `max_text_tokens`,
        `device` on the encoder."""
        out = np.zeros((len(texts), self.text_dim), np.float32)
        idx = np.flatnonzero(text_present(texts))
        for i in range(0, len(idx), self.batch_size):
            rows = idx[i : i + self.batch_size]
            tok = self.tokenizer(
                [texts[r] for r in rows],
                padding=True,
                truncation=True,
                max_length=self.max_text_tokens,
                return_tensors="pt",
            ).to(self.device)
            out[rows] = l2_normalise(embed(tok)).cpu().numpy()
        return out
