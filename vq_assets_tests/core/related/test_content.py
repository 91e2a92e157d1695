"""The CDML input: layout, missing sides, videos without any content."""

import math

import numpy as np
import pyarrow as pa

from vq_assets.core.model.features import LANGUAGES
from vq_assets.core.related.content import (
    N_LANGUAGE,
    content_dim,
    content_from_table,
    content_matrix,
    raw_vectors,
)


def test_layout_and_missing_sides():
    image = np.array([[1.0, 2.0], [0.0, 0.0], [np.nan, 1.0], [3.0, 4.0]], np.float32)
    text = np.array([[5.0], [6.0], [0.0], [0.0]], np.float32)
    cm = content_matrix(image, text, np.array([9.0, 0.0, np.nan, 1.0]), ["es", None, "xx", "en"])
    assert cm.features.shape == (4, content_dim(2, 1)) == (4, 2 + 1 + 1 + 1 + 1 + N_LANGUAGE)
    row = cm.features[0]
    assert row[:6].tolist() == [1.0, 2.0, 1.0, 5.0, 1.0, np.float32(math.log1p(9.0))]
    lang = cm.features[:, 6:]
    assert lang.sum(axis=1).tolist() == [1.0, 1.0, 0.0, 1.0]  # row 2 has no content (below)
    assert lang[0, 1 + LANGUAGES.index("es")] == 1.0
    assert lang[1, 0] == 1.0  # null language
    assert lang[3, 1 + LANGUAGES.index("en")] == 1.0
    # Row 1: no image (zeros, unflagged), text present; bad duration -> log1p(0).
    assert cm.features[1, :6].tolist() == [0.0, 0.0, 0.0, 6.0, 1.0, 0.0]
    # Row 2: a NaN image is a broken image, and the text is zeros: no content at all.
    assert cm.mask.tolist() == [True, True, False, True]
    assert not cm.features[2].any()
    assert cm.missing == 1
    assert np.isfinite(cm.features).all()


def test_from_table_with_null_and_flagged_rows():
    dim = 3
    table = pa.table(
        {
            "video_id": ["a", "b", "c", "d"],
            "image_emb": pa.array(
                [[1.0, 1.0, 1.0], None, [0.0, 0.0, 0.0], [2.0, 2.0, 2.0]],
                pa.list_(pa.float32(), dim),
            ),
            "text_emb": pa.nulls(4, pa.list_(pa.float32(), 0)),  # a text-less encoder
            "has_image": [True, False, False, None],
            "has_text": [False, False, False, False],
            "duration_s": [1.0, 2.0, None, 4.0],
            "language": ["zz", "fr", None, "de"],
        }
    )
    cm = content_from_table(table)
    assert cm.features.shape == (4, content_dim(dim, 0))
    assert cm.mask.tolist() == [True, False, False, False]  # a null flag is absent too
    assert cm.features[0, :4].tolist() == [1.0, 1.0, 1.0, 1.0]
    # image, has_image, has_text, log1p(duration), then the language: "zz" is "other".
    assert cm.features[0, dim + 3 + len(LANGUAGES) + 1] == 1.0
    assert not cm.features[3].any()  # no content: the row is all zeros


def test_raw_vectors_weigh_each_side_equally():
    image = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]], np.float32)
    text = np.array([[10.0], [2.0], [0.0]], np.float32)
    cm = content_matrix(image, text, np.array([30.0, 5.0, 1.0]), ["en", "ja", None])
    raw = raw_vectors(cm, image_dim=2)
    assert raw.shape == (3, 3)
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(raw[0], [0.6 * s, 0.8 * s, s], rtol=1e-6)  # sides equal, unit
    np.testing.assert_allclose(raw[1], [0.0, 0.0, 1.0])  # text only; duration/language out
    assert not raw[2].any()  # no content: zeros
