"""A small world where co-watch follows hidden topics that are a noisy function of content.

Each video has a topic (what co-watch follows) and a style (what it looks like, unrelated to
co-watch, and louder in the features): raw-content cosine mostly finds the same style, so a
tower must learn to look past it to find co-watched videos.
"""

from dataclasses import dataclass

import numpy as np

from vq_assets.core.model.features import LANGUAGES
from vq_assets.core.related.content import ContentMatrix, content_matrix


@dataclass
class World:
    content: ContentMatrix
    topic: np.ndarray  # [n]
    train: tuple[np.ndarray, np.ndarray, np.ndarray]  # pairs among the first n_train videos
    val: tuple[np.ndarray, np.ndarray]  # pairs of held-out (newer) videos with any video


def make_world(
    seed: int = 0, n: int = 480, n_train: int = 360, topics: int = 12, per_video: int = 6
) -> World:
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, topics, n)
    style = rng.integers(0, topics, n)
    topic_c, style_c = rng.standard_normal((topics, 6)), rng.standard_normal((topics, 6))

    def side(width: int) -> np.ndarray:
        t, s = rng.standard_normal((6, width)), rng.standard_normal((6, width))
        signal = topic_c[topic] @ t / np.sqrt(6)
        nuisance = 3.0 * style_c[style] @ s / np.sqrt(6)
        return signal + nuisance + 0.5 * rng.standard_normal((n, width))

    image, text = side(24), side(16)
    content = content_matrix(
        image,
        text,
        rng.lognormal(3.0, 1.0, n),
        [LANGUAGES[i] for i in rng.integers(0, 4, n)],
    )

    def pairs(rows: np.ndarray, pool: np.ndarray, per: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = [], []
        for i in rows:
            same = pool[(topic[pool] == topic[i]) & (pool != i)]
            for j in rng.choice(same, per):
                a.append(i)
                b.append(j)
        return np.asarray(a, np.int64), np.asarray(b, np.int64)

    ta, tb = pairs(np.arange(n_train), np.arange(n_train), per_video)
    weights = rng.integers(1, 5, len(ta)).astype(np.float64)
    va, vb = pairs(np.arange(n_train, n), np.arange(n), per_video - 2)
    return World(content, topic, (ta, tb, weights), (va, vb))
