"""BERT/RoBERTa text encoder: any BERT-family checkpoint by hub id or local path, mean-pooled
by `TextOnlyEncoder`, or a small placeholder checkpoint built locally when none is configured
(no tokenizer can be downloaded: the placeholder carries a tiny character WordPiece vocab)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from vq_assets.core.embeddings.minilm import TextOnlyEncoder
from vq_assets.core.embeddings.placeholder import (
    DEFAULT_CACHE_DIR,
    PLACEHOLDER_INIT_STD,
    ensure_placeholder,
    tiny_wordpiece_vocab,
)

Family = Literal["bert", "roberta"]
MAX_TOKENS = 128
PLACEHOLDER_DIRNAME = "bert-placeholder"
PLACEHOLDER_WARNING = (
    "PLACEHOLDER {family} text weights (random init, seed {seed}) at {path}: NOT a trained "
    "model, the caption embeddings carry no meaning; set text_model to a trained BERT/RoBERTa "
    "checkpoint (hub id or local path) for real embeddings"
)


def ensure_placeholder_bert(
    dir: str | os.PathLike[str], seed: int = 0, family: Family = "bert"
) -> Path:
    """Build (once) a 2-layer, 64-wide randomly initialised `BertModel` (or `RobertaModel`)
    with a WordPiece tokenizer over `tiny_wordpiece_vocab`, up to 128 tokens."""
    from transformers import BertConfig, BertModel, BertTokenizer, RobertaConfig, RobertaModel

    vocab = tiny_wordpiece_vocab()
    ids = {tok: i for i, tok in enumerate(vocab)}
    shape = {
        "vocab_size": len(vocab),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "pad_token_id": ids["[PAD]"],
        "initializer_range": PLACEHOLDER_INIT_STD,
    }
    if family == "bert":
        config, cls = BertConfig(**shape, max_position_embeddings=MAX_TOKENS), BertModel
    elif family == "roberta":
        # RoBERTa's positions start after the padding index
        config = RobertaConfig(**shape, max_position_embeddings=MAX_TOKENS + ids["[PAD]"] + 1)
        cls = RobertaModel
    else:
        raise ValueError(f"family must be bert or roberta: {family!r}")

    def build(tmp: Path) -> None:
        cls(config).eval().save_pretrained(tmp)
        BertTokenizer(vocab=ids, model_max_length=MAX_TOKENS).save_pretrained(tmp)

    warning = PLACEHOLDER_WARNING.format(family=family, seed=seed, path=dir)
    return ensure_placeholder(dir, {"seed": seed, "family": family}, build, family, warning)


def load_bert(
    model: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
    **opts: object,
) -> TextOnlyEncoder:
    """`model` (hub id or path) when given, else the placeholder under `cache_dir`. A
    configured model that cannot be loaded is an error, never a silent placeholder."""
    if model is None:
        model = ensure_placeholder_bert(Path(cache_dir) / PLACEHOLDER_DIRNAME)
    return TextOnlyEncoder(model, **opts)
