"""BLIP encoder: the production one.

BLIP's image-text retrieval model, whose `vision_proj` and `text_proj` map both towers into the
shared (contrastive) retrieval space. Weights cannot be downloaded on these machines, so
`ensure_placeholder_blip` builds a small randomly initialised BLIP checkpoint locally and the
encoder loads it through the very same `from_pretrained` path; its vectors are deterministic but
carry no meaning, and everything that touches them says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from huggingface_hub.errors import HFValidationError

from vq_assets.core.embeddings.base import DTYPES, VideoEncoder, pick_device, resize_square
from vq_assets.core.embeddings.media import RESAMPLE
from vq_assets.core.embeddings.placeholder import (
    DEFAULT_CACHE_DIR,
    PLACEHOLDER_INIT_STD,
    checkpoint_version,
    ensure_placeholder,
    placeholder_spec,
    tiny_wordpiece_vocab,
)

log = logging.getLogger(__name__)

BLIP_MODEL_ENV = "VQ_BLIP_MODEL"
PLACEHOLDER_DIRNAME = "blip-placeholder"
PLACEHOLDER_WARNING = (
    "PLACEHOLDER BLIP weights (random init, seed {seed}) at {path}: these are NOT a trained "
    f"BLIP and the embeddings carry no meaning; set {BLIP_MODEL_ENV} to a trained "
    "BlipForImageTextRetrieval checkpoint (hub id or local path) for real embeddings"
)


class BlipEncoder(VideoEncoder):
    """BLIP (`BlipForImageTextRetrieval`) image and text embeddings in its retrieval space.

    image: vision_proj(CLS of the vision tower) per frame, L2-normalised as BLIP's contrastive
    head does, mean-pooled over a video's frames and normalised again. text: text_proj(CLS of the
    unimodal text encoder), L2-normalised. Pixels are normalised on the device from uint8 frames
    already resized by the decoder, which matches the checkpoint's image processor (bicubic
    resize, rescale, mean/std) without a per-frame PIL pass in the model's process.
    """

    name = "blip-itr"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: str = "auto",
        dtype: str = "fp32",
        batch_size: int = 64,
        max_text_tokens: int | None = None,
    ) -> None:
        from transformers import BlipForImageTextRetrieval, BlipProcessor

        self.source = os.fspath(model)
        self.device = torch.device(pick_device(device))
        self.dtype = DTYPES[dtype]
        self.batch_size = batch_size
        self.processor = BlipProcessor.from_pretrained(self.source)
        self.model = BlipForImageTextRetrieval.from_pretrained(self.source, dtype=self.dtype)
        archs = self.model.config.architectures or []
        if "BlipForImageTextRetrieval" not in archs:
            # A captioning/VQA checkpoint has no trained vision_proj/text_proj: the vectors would
            # come from freshly initialised projections.
            raise ValueError(
                f"{self.source} is {archs}, not a BlipForImageTextRetrieval checkpoint"
            )
        self.model.to(self.device).eval()

        self.placeholder, self.version = checkpoint_version(self.source, self.model.config)
        if self.placeholder:
            seed = placeholder_spec(self.source)["seed"]
            log.warning(PLACEHOLDER_WARNING.format(seed=seed, path=self.source))

        cfg = self.model.config
        self.image_dim = self.text_dim = cfg.image_text_hidden_size
        ip = self.processor.image_processor
        self.frame_size = int(ip.size["height"])
        if int(ip.size["width"]) != self.frame_size or int(ip.resample) != int(RESAMPLE):
            raise ValueError(f"unsupported image processor settings: {ip.size}, {ip.resample}")
        shape = (1, 3, 1, 1)
        self._scale = float(ip.rescale_factor) if ip.do_rescale else 1.0
        self._mean = torch.tensor(ip.image_mean, device=self.device).view(shape)
        self._std = torch.tensor(ip.image_std, device=self.device).view(shape)
        self.tokenizer = self.processor.tokenizer
        self.max_text_tokens = max_text_tokens or min(
            cfg.text_config.max_position_embeddings, self.tokenizer.model_max_length
        )
        log.info(
            "BLIP encoder %s (%s) on %s %s, batch %d%s",
            self.source,
            self.version,
            self.device,
            dtype,
            batch_size,
            " — PLACEHOLDER weights, not a trained BLIP" if self.placeholder else "",
        )

    def pixel_values(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] → normalised [N, 3, S, S] on the device in the model's dtype."""
        if frames.shape[1:3] != (self.frame_size, self.frame_size):
            frames = np.stack([resize_square(f, self.frame_size) for f in frames])
        x = torch.from_numpy(frames).to(self.device, non_blocking=True)  # uint8: 4x less to copy
        x = x.permute(0, 3, 1, 2).float() * self._scale
        return ((x - self._mean) / self._std).to(self.dtype)

    @torch.inference_mode()
    def encode_images(self, stacks: Sequence[np.ndarray]) -> np.ndarray:
        def embed(frames: np.ndarray) -> torch.Tensor:
            x = self.pixel_values(frames)
            cls = self.model.vision_model(pixel_values=x).last_hidden_state[:, 0, :]
            return self.model.vision_proj(cls)

        return self._pooled_frames(stacks, embed)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str | None]) -> np.ndarray:
        def embed(tok: Mapping[str, torch.Tensor]) -> torch.Tensor:
            hidden = self.model.text_encoder(
                input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
            ).last_hidden_state
            return self.model.text_proj(hidden[:, 0, :])

        return self._texts_in_batches(texts, embed)


def ensure_placeholder_blip(
    dir: str | os.PathLike[str], seed: int = 0, size: Literal["tiny", "base"] = "tiny"
) -> Path:
    """Build (once) a randomly initialised BLIP retrieval checkpoint that loads offline.

    `tiny` is a 64 px, 2-layer, 64-wide model for tests and the offline demo; `base` has BLIP
    base's shapes (ViT-B/16 at 384 px, 12-layer BERT text tower) for benchmarking. Saved with
    `save_pretrained` (model, BERT WordPiece tokenizer, BLIP image processor) plus the marker
    that makes every encoder loading it report `placeholder=True` (see `ensure_placeholder`).
    """
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForImageTextRetrieval,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    vocab = tiny_wordpiece_vocab()
    ids = {tok: i for i, tok in enumerate(vocab)}
    text = {
        "vocab_size": len(vocab),
        "pad_token_id": ids["[PAD]"],
        "bos_token_id": ids["[DEC]"],
        "sep_token_id": ids["[SEP]"],
        "eos_token_id": ids["[SEP]"],
    }
    if size == "tiny":
        image_size = 64
        common = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
        text |= common | {"num_attention_heads": 2, "max_position_embeddings": 128}
        vision = common | {"num_attention_heads": 2, "image_size": image_size, "patch_size": 16}
        extra = {"projection_dim": 64, "image_text_hidden_size": 64}
    else:
        image_size = 384  # BLIP base's defaults are the shapes wanted; only the vocab is small
        vision = {"image_size": image_size}
        extra = {}
    text["initializer_range"] = vision["initializer_range"] = PLACEHOLDER_INIT_STD
    config = BlipConfig(
        text_config=text, vision_config=vision, initializer_range=PLACEHOLDER_INIT_STD, **extra
    )
    config.architectures = ["BlipForImageTextRetrieval"]

    def build(tmp: Path) -> None:
        BlipForImageTextRetrieval(config).eval().save_pretrained(tmp)
        tokenizer = BertTokenizer(
            vocab=ids, model_max_length=config.text_config.max_position_embeddings
        )
        image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
        BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp)

    warning = PLACEHOLDER_WARNING.format(seed=seed, path=dir)
    return ensure_placeholder(dir, {"seed": seed, "size": size}, build, "BLIP", warning)


def resolve_blip(
    model: str | None = None, cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR
) -> tuple[str, bool]:
    """(hub id or path, is_placeholder): `model`, else env `VQ_BLIP_MODEL`, else the placeholder
    checkpoint under `cache_dir/blip-placeholder` (built on first use)."""
    configured = model or os.environ.get(BLIP_MODEL_ENV) or None
    if configured:
        return configured, False
    return os.fspath(ensure_placeholder_blip(Path(cache_dir) / PLACEHOLDER_DIRNAME)), True


def load_blip(
    model: str | None = None,
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
    *,
    device: str = "auto",
    dtype: str = "fp32",
    batch_size: int = 64,
    fallback: bool = True,
) -> BlipEncoder:
    """The configured BLIP encoder; when it cannot be loaded (hub unreachable offline, path
    missing) and `fallback` is on, the placeholder one, with a loud warning. Production should
    pass `fallback=False` or check `encoder.placeholder`."""
    source, placeholder = resolve_blip(model, cache_dir)
    try:
        return BlipEncoder(source, device=device, dtype=dtype, batch_size=batch_size)
    except (OSError, HFValidationError) as e:  # unreachable hub id / path that is not there
        if placeholder or not fallback:
            raise
        path = ensure_placeholder_blip(Path(cache_dir) / PLACEHOLDER_DIRNAME)
        log.warning(
            "could not load BLIP %r (%s); FALLING BACK TO PLACEHOLDER WEIGHTS at %s",
            source,
            e,
            path,
        )
        return BlipEncoder(path, device=device, dtype=dtype, batch_size=batch_size)
