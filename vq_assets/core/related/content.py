"""The CDML tower's input: what is known about a video at creation, as one float vector.

    [ image_emb * has_image | has_image | text_emb * has_text | has_text
      | log1p(duration_s) | one-hot language (features.LANGUAGES, null, other) ]

A video with neither an image nor a text embedding has no content worth a vector: its row is
all zeros and its `mask` entry False. It gets no CDML vector and no related list; the caller
counts it. Nothing here raises on a missing or broken embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vq_assets.core.model.features import LANGUAGES, language_index

N_LANGUAGE = len(LANGUAGES) + 2  # language_index: 0 = null, 1..len = known, len + 1 = other


class ContentMatrix(NamedTuple):
    features: np.ndarray  # [n, content_dim(image_dim, text_dim)] float32
    mask: np.ndarray  # [n] bool: True where the video has any content vector

    @property
    def missing(self) -> int:
        return int((~self.mask).sum())


def content_dim(image_dim: int, text_dim: int) -> int:
    return image_dim + 1 + text_dim + 1 + 1 + N_LANGUAGE


def _present(emb: np.ndarray, flag: np.ndarray | None) -> np.ndarray:
    """Rows that hold a usable embedding: flagged present (or, unflagged, not all zero), and
    finite (a NaN row is a broken embedding, treated as absent rather than poisoning a batch)."""
    if emb.shape[1] == 0:
        return np.zeros(len(emb), bool)
    finite = np.isfinite(emb).all(axis=1)
    given = (np.abs(np.nan_to_num(emb)).sum(axis=1) > 0) if flag is None else flag.astype(bool)
    return finite & given


def content_matrix(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    duration_s: np.ndarray,
    language: Sequence[str | None],
    *,
    has_image: np.ndarray | None = None,
    has_text: np.ndarray | None = None,
) -> ContentMatrix:
    """Content features of n videos; see the module docstring for the layout.

    image_emb [n, di], text_emb [n, dt] (either width may be 0), duration_s [n], language
    [n]. `has_image` / `has_text` are the embeddings table's flags (a missing side is a zero
    vector there); without them a row of zeros or non-finite values counts as missing.
    """
    image = np.asarray(image_emb, np.float32)
    text = np.asarray(text_emb, np.float32)
    n = len(image)
    if len(text) != n or len(duration_s) != n or len(language) != n:
        raise ValueError("image_emb, text_emb, duration_s and language must have equal length")
    img_ok, txt_ok = _present(image, has_image), _present(text, has_text)
    duration = np.asarray(duration_s, np.float64)
    duration = np.where(np.isfinite(duration) & (duration > 0), duration, 0.0)
    lang = np.zeros((n, N_LANGUAGE), np.float32)
    lang[np.arange(n), language_index(list(language))] = 1.0
    features = np.concatenate(
        [
            np.where(img_ok[:, None], np.nan_to_num(image), 0.0),
            img_ok[:, None],
            np.where(txt_ok[:, None], np.nan_to_num(text), 0.0),
            txt_ok[:, None],
            np.log1p(duration)[:, None],
            lang,
        ],
        axis=1,
    ).astype(np.float32)
    mask = img_ok | txt_ok
    features[~mask] = 0.0
    return ContentMatrix(features, mask)


def _list_column(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """[n, d] float32 and a [n] present flag from a (fixed-size) list column; null rows and an
    all-null column (an encoder side that does not exist) become zeros, flagged absent."""
    arr = table.column(name).combine_chunks()
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), bool)
    present = arr.filter(pa.array(valid))
    if len(present) == 0:
        return np.zeros((len(arr), 0), np.float32), valid
    widths = pc.unique(pc.list_value_length(present)).to_pylist()
    if len(widths) != 1:
        raise ValueError(f"column {name} has rows of widths {sorted(widths)}")
    out = np.zeros((len(arr), widths[0]), np.float32)
    flat = present.flatten().to_numpy(zero_copy_only=False)
    out[valid] = flat.astype(np.float32).reshape(len(present), widths[0])  # null values: NaN
    return out, valid


def list_width(table: pa.Table, name: str) -> int:
    """Width of a list column's vectors (a DuckDB result turns fixed-size lists into plain
    ones); 0 when no row has one."""
    kind = table.schema.field(name).type
    if pa.types.is_fixed_size_list(kind):
        return kind.list_size
    widths = pc.list_value_length(table.column(name)).drop_null()
    return int(pc.max(widths).as_py() or 0) if len(widths) else 0


def content_from_table(table: pa.Table) -> ContentMatrix:
    """`content_matrix` of a table with columns image_emb, text_emb, duration_s, language and
    optionally has_image, has_text (the `video_embeddings` rows joined to `raw_videos`)."""
    image, image_valid = _list_column(table, "image_emb")
    text, text_valid = _list_column(table, "text_emb")

    def flag(name: str, valid: np.ndarray) -> np.ndarray:
        if name not in table.column_names:
            return valid
        given = pc.fill_null(table.column(name), False)  # a null flag: absent
        return valid & given.to_numpy(zero_copy_only=False).astype(bool)

    duration = pc.fill_null(pc.cast(table.column("duration_s"), pa.float64()), float("nan"))
    return content_matrix(
        image,
        text,
        duration.to_numpy(zero_copy_only=False),
        table.column("language").to_pylist(),
        has_image=flag("has_image", image_valid),
        has_text=flag("has_text", text_valid),
    )


def raw_vectors(content: ContentMatrix, image_dim: int) -> np.ndarray:
    """The encoders' own vectors as one unit vector per video: [image / |image|, text / |text|]
    over sqrt(2) (a missing side is zeros), or zeros where the video has no content.

    What "cosine on the raw content vectors" means (the CDML baseline, and the similarity of
    the retrieval-augmented prior): each side counts equally, and duration and language, which
    are not embeddings, stay out.
    """
    x = content.features
    text_dim = x.shape[1] - content_dim(image_dim, 0)
    image = x[:, :image_dim]
    text = x[:, image_dim + 1 : image_dim + 1 + text_dim]

    def unit(side: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(side, axis=1, keepdims=True)
        return side / np.where(norm > 0, norm, 1.0)

    both = np.concatenate([unit(image), unit(text)], axis=1)
    norm = np.linalg.norm(both, axis=1, keepdims=True)
    return (both / np.where(norm > 0, norm, 1.0)).astype(np.float32)
