"""Hashed n-gram ids of a text (a caption), for a representation learnt with the quality model.

A frozen English sentence encoder reads little of a caption in Hindi or Japanese. Character
n-grams (fastText style: 1- to 3-grams of each whitespace token between boundary markers
``<`` and ``>``) plus the tokens themselves work in every script, with or without spaces; each
is hashed into one of ``buckets`` rows of an embedding table that trains end to end
(``network.GroupProjection``).

The hash is blake2b with a fixed salt, never Python's per-process salted ``hash``: the same
text gets the same ids in every process, and the settings travel with the model in
``config.json`` (``NetworkConfig.text_hashing``), so scoring hashes exactly as training did.
Id 0 is padding (an empty or null text has no ids).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

_WORD, _CHARS = b"w\x00", b"c\x00"  # keep a token and a char n-gram of the same text apart


@dataclass(frozen=True)
class NgramHashing:
    """How a text becomes ids in ``[1, buckets]``.

    Args:
        buckets: rows of the embedding table besides padding.
        min_n, max_n: character n-gram sizes, boundary markers included.
        words: whether whitespace tokens are ids too.
        max_ids: ids kept per text, the first ones (bounds the work on a very long text).
        seed: the hash's salt; another seed is another, independent hashing.
    """

    buckets: int = 1 << 15
    min_n: int = 1
    max_n: int = 3
    words: bool = True
    max_ids: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.buckets < 1 << 31 or self.max_ids < 1 or not 1 <= self.min_n <= self.max_n:
            raise ValueError(f"need 1 <= buckets < 2^31, max_ids >= 1, 1 <= min_n <= max_n: {self}")
        if not 0 <= self.seed < 1 << 128:
            raise ValueError(f"seed must fit 16 bytes: {self.seed}")

    def ids(self, text: str | None) -> list[int]:
        """The ids of ``text`` (NFKC-normalised, casefolded), token by token, at most
        ``max_ids``; empty for None or a blank text."""
        if not text:
            return []
        out: list[int] = []
        for token in unicodedata.normalize("NFKC", text).casefold().split():
            out += _token_ids(token, self)
            if len(out) >= self.max_ids:
                break
        return out[: self.max_ids]

    def matrix(self, texts: Sequence[str | None]) -> np.ndarray:
        """``[n, w]`` int32 ids (half the memory of int64; ``nn.EmbeddingBag`` takes both), each
        row padded with 0 to the longest (``w >= 1``)."""
        rows = [self.ids(t) for t in texts]
        out = np.zeros((len(rows), max([1, *map(len, rows)])), np.int32)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NgramHashing:
        return cls(**d)


@lru_cache(maxsize=1 << 18)
def _token_ids(token: str, hashing: NgramHashing) -> tuple[int, ...]:
    # Tokens repeat across texts far more than texts do: hashing each once is the saving.
    salt = hashing.seed.to_bytes(16, "little")

    def bucket(kind: bytes, gram: str) -> int:
        digest = hashlib.blake2b(kind + gram.encode(), digest_size=8, salt=salt).digest()
        return int.from_bytes(digest, "little") % hashing.buckets + 1

    marked = f"<{token}>"
    grams = [
        marked[i : i + n]
        for n in range(hashing.min_n, hashing.max_n + 1)
        for i in range(len(marked) - n + 1)
    ]
    ids = [bucket(_CHARS, g) for g in grams if g not in ("<", ">")]
    if hashing.words:
        ids.append(bucket(_WORD, token))
    return tuple(ids)
