"""CDML: the in-batch triplet loss by hand, learning on a synthetic world, resuming, files."""

import itertools

import numpy as np
import pytest
import torch

from vq_assets.core.related.cdml import (
    CDMLConfig,
    CDMLTower,
    cdml_vectors,
    embed,
    recall_at_k,
    train_cdml,
    triplet_loss_in_batch,
)
from vq_assets.core.related.checkpoint import CHECKPOINT_FILE, load_tower, save_tower
from vq_assets.core.related.content import content_matrix
from vq_assets_tests.core.related.synthetic import make_world

# Tiny models: see conftest.one_torch_thread.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# Anchor 0 = (1, 0), its positive (0.8, 0.6) at squared distance 0.40. The other positives:
# p1 = (1, 0) at 0.0 (closer than the positive: the hardest) and p2 = (0.6, 0.8) at 0.80 (the
# closest one farther than the positive: semi-hard). Anchor 1 = (-1, 0) with positive (1, 0)
# at 4.0: no negative is farther, so semi-hard falls back to the hardest, p2 at 3.2.
ANCHOR = t([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
POSITIVE = t([[0.8, 0.6], [1.0, 0.0], [0.6, 0.8]])
MARGIN = 0.5


@pytest.mark.parametrize(
    ("mode", "weight", "expected"),
    [
        ("hardest", [1, 0, 0], 0.40 - 0.0 + MARGIN),
        ("semi-hard", [1, 0, 0], 0.40 - 0.80 + MARGIN),
        ("hardest", [0, 1, 0], 4.0 - 3.2 + MARGIN),
        ("semi-hard", [0, 1, 0], 4.0 - 3.2 + MARGIN),
    ],
)
def test_triplet_loss_by_hand(mode, weight, expected):
    loss = triplet_loss_in_batch(ANCHOR, POSITIVE, MARGIN, mode, weight=t(weight))
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_a_negative_that_is_the_anchor_video_itself_is_not_a_negative():
    # p1 is the anchor-0 video itself (it appears twice in the batch): not a negative for
    # anchor 0, so even "hardest" takes p2.
    ids_a, ids_p = torch.tensor([7, 8, 9]), torch.tensor([5, 7, 6])
    loss = triplet_loss_in_batch(
        ANCHOR,
        POSITIVE,
        MARGIN,
        "hardest",
        anchor_ids=ids_a,
        positive_ids=ids_p,
        weight=t([1, 0, 0]),
    )
    assert loss.item() == pytest.approx(0.40 - 0.80 + MARGIN, abs=1e-5)


def reference_loss(a, p, margin, mode, w):
    """Loops over the batch: FaceNet's rules spelled out."""
    d = lambda x, y: float(((x - y) ** 2).sum())  # noqa: E731
    total, weight = 0.0, 0.0
    for i in range(len(a)):
        d_ap = d(a[i], p[i])
        negs = [d(a[i], p[j]) for j in range(len(a)) if j != i]
        farther = [x for x in negs if x > d_ap]
        n = min(farther) if mode == "semi-hard" and farther else min(negs)
        total += w[i] * max(0.0, d_ap - n + margin)
        weight += w[i]
    return total / weight


@pytest.mark.parametrize(
    ("mode", "seed"), list(itertools.product(["semi-hard", "hardest"], [0, 1, 2]))
)
def test_triplet_loss_matches_a_loop_reference(mode, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(9, 5, generator=g), dim=1)
    p = torch.nn.functional.normalize(a + 0.8 * torch.randn(9, 5, generator=g), dim=1)
    w = torch.rand(9, generator=g) + 0.1
    got = triplet_loss_in_batch(a, p, 0.3, mode, weight=w).item()
    assert got == pytest.approx(reference_loss(a, p, 0.3, mode, w.tolist()), rel=1e-5)


def test_no_candidate_negative_gives_zero_loss_and_finite_gradients():
    a = torch.nn.functional.normalize(torch.randn(1, 4), dim=1).requires_grad_()
    loss = triplet_loss_in_batch(a, a.detach().flip(1), 0.2)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(a.grad).all()


def val_recall(vecs: np.ndarray, val: tuple[np.ndarray, np.ndarray], k: int = 20) -> float:
    queries, inverse = np.unique(np.concatenate(val), return_inverse=True)
    targets = np.concatenate([val[1], val[0]])
    return recall_at_k(vecs[queries], vecs, (inverse, targets), k, self_index=queries)


def test_cdml_beats_raw_content_cosine_on_new_videos():
    world = make_world(seed=0)
    x = world.content.features
    config = CDMLConfig(in_dim=x.shape[1], hidden=(64,), batch_size=64, lr=3e-3, epochs=5)
    seen = []
    result = train_cdml(x, world.train, world.val, config, on_epoch=seen.append)
    cdml = val_recall(embed(result.tower, x), world.val)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    content = val_recall(unit, world.val)
    rng = np.random.default_rng(0).standard_normal((len(x), 64)).astype(np.float32)
    random = val_recall(rng / np.linalg.norm(rng, axis=1, keepdims=True), world.val)
    assert cdml > 2 * content and cdml > content + 0.15, (cdml, content)
    assert content > random  # the content does carry some of the topic
    assert [r["epoch"] for r in seen] == [1, 2, 3, 4, 5] == [r["epoch"] for r in result.history]
    assert cdml == pytest.approx(result.best_recall)  # the returned tower is the best epoch's
    assert seen[result.best_epoch - 1]["val_recall_at_20"] == result.best_recall
    vecs = embed(result.tower, x)
    assert vecs.shape == (len(x), 64)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def small_run(tmp_path, epochs, **kw):
    world = make_world(seed=1, n=160, n_train=120, topics=6, per_video=3)
    x = world.content.features
    config = CDMLConfig(in_dim=x.shape[1], hidden=(32,), batch_size=32, epochs=epochs, seed=5)
    return train_cdml(x, world.train, world.val, config, restore_best=False, **kw)


def test_resume_from_checkpoint_gives_the_uninterrupted_weights(tmp_path):
    straight = small_run(tmp_path, 4)

    def crash(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt("killed after epoch 2")

    with pytest.raises(KeyboardInterrupt):
        small_run(tmp_path, 4, checkpoint_dir=tmp_path, on_epoch=crash)
    assert (tmp_path / CHECKPOINT_FILE).exists()
    resumed = small_run(tmp_path, 4, checkpoint_dir=tmp_path)
    assert resumed.resumed_from_epoch == 2
    assert resumed.history == straight.history
    a, b = straight.tower.state_dict(), resumed.tower.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A finished run resumed with more epochs goes on; with another seed it is refused.
    assert small_run(tmp_path, 5, checkpoint_dir=tmp_path).resumed_from_epoch == 4
    world = make_world(seed=1, n=160, n_train=120, topics=6, per_video=3)
    x = world.content.features
    other = CDMLConfig(in_dim=x.shape[1], hidden=(32,), batch_size=32, epochs=5, seed=6)
    with pytest.raises(ValueError, match="another CDML config or training data"):
        train_cdml(x, world.train, world.val, other, checkpoint_dir=tmp_path)


def test_checkpoint_is_not_a_pickle(tmp_path):
    small_run(tmp_path, 1, checkpoint_dir=tmp_path)
    head = (tmp_path / CHECKPOINT_FILE).read_bytes()[:16]
    assert not head.startswith(b"\x80") and not head.startswith(b"PK")  # pickle / torch zip


def test_tower_file_round_trip(tmp_path):
    world = make_world(seed=2, n=60, n_train=40, topics=3, per_video=2)
    x = world.content.features
    result = small_run(tmp_path, 1)
    tower = CDMLTower(CDMLConfig(in_dim=x.shape[1], hidden=(8, 8), out_dim=16))
    tower.set_standardisation(x)
    save_tower(tmp_path / "t.safetensors", tower)
    back = load_tower(tmp_path / "t.safetensors")
    assert back.config == tower.config
    assert np.array_equal(embed(back, x), embed(tower, x))
    save_tower(tmp_path / "r.safetensors", result.tower)
    assert load_tower(tmp_path / "r.safetensors").config.hidden == (32,)


def test_videos_without_content_get_no_vector():
    n = 5
    image = np.ones((n, 3), np.float32)
    text = np.ones((n, 2), np.float32)
    has_image = np.array([True, False, False, True, False])
    has_text = np.array([True, True, False, False, False])
    cm = content_matrix(
        image, text, np.full(n, 10.0), ["en"] * n, has_image=has_image, has_text=has_text
    )
    assert cm.mask.tolist() == [True, True, False, True, False] and cm.missing == 2
    tower = CDMLTower(CDMLConfig(in_dim=cm.features.shape[1], hidden=(4,)))
    table = cdml_vectors(tower, list("abcde"), cm)
    assert table.column("video_id").to_pylist() == ["a", "b", "d"]
    assert table.schema.field("cdml_emb").type.list_size == 64
    with pytest.raises(ValueError, match="finite"):
        train_cdml(np.full((2, 3), np.nan, np.float32), (np.array([0]), np.array([1])))
