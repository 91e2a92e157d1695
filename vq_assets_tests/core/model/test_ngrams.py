"""The caption's learned n-gram representation: hashing, the network group, saving, scoring."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.features import FULL_MODEL, caption_texts, groups_for, to_dataset
from vq_assets.core.model.inference import CONFIG_FILE, load_model, predict, save_model
from vq_assets.core.model.ngrams import NgramHashing
from vq_assets.core.model.settings import ModelShape, TrainSettings
from vq_assets.core.model.synthetic import make_synthetic
from vq_assets.core.model.train import network_config, train_model
from vq_assets.core.serving.scores import score_videos
from vq_assets_tests.core.serving.test_scores import _rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAPTIONS = [
    "नमस्ते आज का खाना रेसिपी #रेसिपी",
    "こんにちは 猫のいる暮らし もふもふ",
    "hello cute puppy",
]
TINY = ModelShape(width=8, cross_rank=4, mlp=(16,), members=1, group_dropout=0.0, text_dim=8)


def test_ids_are_stable_across_processes_and_scripts() -> None:
    hashing = NgramHashing()
    ids = [hashing.ids(c) for c in CAPTIONS]
    assert all(ids) and all(1 <= i <= hashing.buckets for row in ids for i in row)
    assert len({tuple(row) for row in ids}) == len(CAPTIONS)
    # Another interpreter with another string-hash salt gives the same ids.
    code = (
        "import json, sys; from vq_assets.core.model.ngrams import NgramHashing; "
        "print(json.dumps([NgramHashing().ids(c) for c in json.loads(sys.argv[1])]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(CAPTIONS)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(out.stdout) == ids
    # Another seed is another hashing.
    assert NgramHashing(seed=1).ids(CAPTIONS[0]) != ids[0]


def test_ids_normalise_and_handle_missing_text() -> None:
    hashing = NgramHashing(max_ids=20)
    assert hashing.ids("ＨＥＬＬＯ  World") == hashing.ids("hello world")
    assert hashing.ids(None) == hashing.ids("") == hashing.ids("   ") == []
    assert len(hashing.ids("a much longer caption than twenty ids")) == 20
    m = hashing.matrix([None, "hi", ""])
    assert m.shape[0] == 3 and m.dtype == np.int32
    assert not m[0].any() and m[1].all() and not m[2].any()
    assert NgramHashing().matrix([]).shape == (0, 1)
    texts = caption_texts([None, "x" * 1000, "ok"])
    assert texts.tolist()[0] == "" and len(texts[1]) == 512 and texts.dtype.kind == "U"


def _captioned(n: int, seed: int) -> QualityDataset:
    """Synthetic rows whose skip rate is driven by a word of the caption only."""
    data = make_synthetic(n, seed=seed, dense_dims={"creator": 4}, cat_cardinalities={})
    rng = np.random.default_rng(seed)
    good = rng.random(n) < 0.5
    words = np.where(good, "もふもふ 最高", "退屈 नमस्ते")
    captions = [f"{w} {rng.integers(100)}" if i % 10 else None for i, w in enumerate(words)]
    targets = {**data.targets, "skip_rate": np.where(good, 0.1, 0.6)}
    features = {**data.features, "caption_ngrams": caption_texts(captions)}
    return QualityDataset(features, targets, data.plays, data.counters)


def test_network_learns_from_the_caption_and_round_trips(tmp_path: Path) -> None:
    data = _captioned(600, seed=0)
    split = np.array(["train"] * 400 + ["validation"] * 200)
    settings = TrainSettings(max_epochs=8, batch_size=64, lr=1e-2, patience=8)
    result = train_model(data, split, ("caption_ngrams",), TINY, settings)
    config = result.model.config
    assert config.groups == ("caption_ngrams",)
    assert config.text_hashing == {"caption_ngrams": NgramHashing()}
    val = data.subset(split == "validation")
    pred = predict(result.model, result.normalizer, val)["skip_rate"]
    good = val.targets["skip_rate"] < 0.3
    has = val.features["caption_ngrams"] != ""
    assert pred[good & has].max() < pred[~good & has].min()

    # Non-default hashing settings are saved in config.json and used again after loading.
    custom = replace(config, text_hashing={"caption_ngrams": NgramHashing(buckets=64, seed=7)})
    model = type(result.model)(custom)
    save_model(tmp_path, model, custom, result.normalizer)
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())["text_hashing"]
    assert saved["caption_ngrams"]["buckets"] == 64 and saved["caption_ngrams"]["seed"] == 7
    loaded = load_model(tmp_path)
    assert loaded.config == custom
    before = predict(model.eval(), result.normalizer, val)
    after = predict(loaded.model, loaded.normalizer, val)
    for task in before:
        np.testing.assert_array_equal(before[task], after[task])


def test_caption_group_from_joined_rows_is_scored(tmp_path: Path) -> None:
    rows = _rows(300, 8, with_labels=True)
    captions = [None if i % 7 == 0 else f"猫 {i % 5} かわいい" for i in range(rows.num_rows)]
    rows = rows.append_column("caption", pa.array(captions, pa.string()))
    data = to_dataset(rows)
    assert "caption_ngrams" not in groups_for(FULL_MODEL, data)
    assert "caption_ngrams" in groups_for("with_caption_ngrams", data, np.ones(len(data), bool))
    assert "caption_ngrams" not in groups_for(  # a platform without captions
        "with_caption_ngrams",
        QualityDataset({**data.features, "caption_ngrams": caption_texts([None] * len(data))}),
        np.ones(len(data), bool),
    )
    split = np.array(["train"] * 200 + ["validation"] * 100)
    groups = ("creator", "caption_ngrams")
    result = train_model(data, split, groups, TINY, TrainSettings(max_epochs=2, batch_size=64))
    save_model(tmp_path, result.model, result.model.config, result.normalizer)
    loaded = load_model(tmp_path)
    scored = score_videos(rows.drop_columns(["plays"]), loaded, model_version=3)
    expected = predict(loaded.model, loaded.normalizer, data)["skip_rate"]
    np.testing.assert_allclose(scored.column("pred_skip_rate").to_numpy(), expected, rtol=1e-6)
    assert network_config(data, groups, TINY).text_hashing == {"caption_ngrams": NgramHashing()}
