import math

import pytest
import torch

from vq_assets.core.model import tasks
from vq_assets.core.model.network import (
    GroupDropout,
    GroupProjection,
    LowRankCrossNet,
    NetworkConfig,
    PairwiseInteraction,
    QualityModel,
    loss_terms,
    to_natural_units,
)
from vq_assets.core.model.settings import ModelShape

DENSE = {"image_emb": 16, "text_emb": 16, "creator": 5}
CATS = {"language": 12, "duration_bucket": 8, "hour": 24, "weekday": 7}


def shape(**kw) -> ModelShape:
    """One network without group dropout unless asked: the parts' own behaviour."""
    return ModelShape(**{"members": 1, "group_dropout": 0.0, **kw})


def _batch(b: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {k: torch.randn(b, d, generator=g) for k, d in DENSE.items()}
    batch |= {k: torch.randint(0, c, (b,), generator=g) for k, c in CATS.items()}
    return batch


def test_group_projection_stacks_dense_then_categorical() -> None:
    proj = GroupProjection({"a": 3, "b": 5}, {"lang": 4}, width=8)
    x = {"a": torch.randn(2, 3), "b": torch.randn(2, 5), "lang": torch.tensor([0, 3])}
    out = proj(x)
    assert out.shape == (2, 3, 8)
    torch.testing.assert_close(out[:, 2], proj.embeddings["lang"].weight[[0, 3]])
    torch.testing.assert_close(out[:, 0], proj.dense["a"](x["a"]))


def test_group_dropout_drops_whole_groups_in_training_only() -> None:
    torch.manual_seed(0)
    groups = torch.randn(4000, 3, 8)
    drop = GroupDropout(0.25)
    out = drop(groups)
    zeroed = (out == 0).all(dim=2)  # [B, G]: a group is dropped as a whole vector
    kept = ~zeroed
    torch.testing.assert_close(out[kept], groups[kept] / 0.75)
    assert zeroed.float().mean().item() == pytest.approx(0.25, abs=0.02)
    assert drop.eval()(groups) is groups


def test_pairwise_interaction_is_upper_triangle_of_dot_products() -> None:
    groups = torch.randn(3, 4, 5)
    out = PairwiseInteraction(4)(groups)
    expected = [(groups[:, i] * groups[:, j]).sum(-1) for i in range(4) for j in range(i + 1, 4)]
    assert out.shape == (3, 6)
    torch.testing.assert_close(out, torch.stack(expected, dim=1))
    assert PairwiseInteraction(1)(torch.randn(3, 1, 5)).shape == (3, 0)


def test_low_rank_cross_net_follows_dcn_v2_formula() -> None:
    torch.manual_seed(0)
    net = LowRankCrossNet(in_features=6, num_layers=2, low_rank=2)
    with torch.no_grad():
        for b in net.bias:
            b.normal_()
    x0 = torch.randn(4, 6)
    x = x0
    for V, U, b in zip(net.V, net.U, net.bias, strict=True):
        x = x0 * (x @ V.T @ U.T + b) + x
    torch.testing.assert_close(net(x0), x)
    assert net.V[0].shape == (2, 6) and net.U[0].shape == (6, 2)
    identity = LowRankCrossNet(6, num_layers=0, low_rank=2)
    torch.testing.assert_close(identity(x0), x0)


@pytest.mark.parametrize(
    ("dense", "cats"),
    [
        ({"image_emb": 16, "text_emb": 16}, {}),  # embeddings only
        ({"creator": 5}, {}),  # creator only: a single group, no interactions
        (DENSE, {}),  # both
        (DENSE, {"language": 12, "duration_bucket": 8}),  # both + language and length
        ({}, CATS),  # categorical only
    ],
)
def test_model_builds_from_any_subset_of_groups(dense: dict, cats: dict) -> None:
    config = NetworkConfig(dense, cats, shape(width=8, mlp=(16,)))
    model = QualityModel(config)
    out = model(_batch())  # extra groups in the batch are ignored
    assert set(out) == set(tasks.names())
    assert all(v.shape == (6,) for v in out.values())
    g = len(dense) + len(cats)
    assert model.body.layers[0].in_features == g * 8 + g * (g - 1) // 2
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_same_seed_same_weights_and_outputs() -> None:
    config = NetworkConfig(DENSE, CATS, shape(width=8, mlp=(16,), dropout=0.0))

    def build(seed: int) -> QualityModel:
        torch.manual_seed(seed)
        return QualityModel(config)

    a, b, c = build(7), build(7), build(8)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.heads.heads["skips"].weight, c.heads.heads["skips"].weight)
    batch = _batch()
    torch.testing.assert_close(a(batch), b(batch), rtol=0, atol=0)


def test_config_round_trip_and_validation() -> None:
    config = NetworkConfig(DENSE, CATS, shape(mlp=(32, 16)), tasks=("skips", "skip_rate"))
    assert NetworkConfig.from_dict(config.to_dict()) == config
    assert config.groups == (*DENSE, *CATS)
    assert NetworkConfig(DENSE).shape == ModelShape()  # production's shape by default
    with pytest.raises(ValueError, match="at least one"):
        NetworkConfig()
    with pytest.raises(ValueError, match="tasks"):
        NetworkConfig(DENSE, tasks=("likes",))
    with pytest.raises(ValueError, match="both dense and categorical"):
        NetworkConfig({"x": 2}, {"x": 3})
    with pytest.raises(ValueError, match="group_dropout"):
        shape(group_dropout=1.0)
    with pytest.raises(ValueError, match="watch_time_prior_plays"):
        shape(watch_time_prior_plays=-1.0)
    # A config.json written before the shape had its own dataclass (flat fields, and before
    # group dropout existed) loads as the network it was trained as.
    flat = {**config.to_dict(), **config.to_dict()["shape"]}
    del flat["shape"], flat["group_dropout"]
    assert NetworkConfig.from_dict(flat) == config


def test_log1p_loss_masks_null_rows() -> None:
    out = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
    target = torch.tensor([1.0, math.nan, 3.0])
    terms = loss_terms({"skips": out}, {"skips": target}, plays=torch.ones(3))
    total, weight = terms["skips"]
    expected = (0.0 - math.log1p(1.0)) ** 2 + (2.0 - math.log1p(3.0)) ** 2
    assert weight.item() == 2.0
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    assert out.grad[1].item() == 0.0 and torch.isfinite(out.grad).all()


def test_watch_time_loss_weighs_videos_by_their_plays() -> None:
    out = torch.tensor([1.0, 1.0, 1.0])
    target = torch.tensor([2.0, math.nan, 5.0])
    plays = torch.tensor([1.0, 0.0, 30.0])
    watch, skips = (
        {"avg_watch_time_s": out, "skips": out},
        {
            "avg_watch_time_s": target,
            "skips": target,
        },
    )
    terms = loss_terms(watch, skips, plays, watch_time_prior_plays=10.0)
    w = torch.tensor([1 / 11, 0.0, 30 / 40])
    err = (out - torch.log1p(torch.nan_to_num(target))) ** 2
    assert terms["avg_watch_time_s"][1].item() == pytest.approx(w.sum().item())
    assert terms["avg_watch_time_s"][0].item() == pytest.approx((w * err).sum().item())
    # Count tasks keep one weight per labelled video; k = 0 gives the unweighted loss.
    assert terms["skips"][1].item() == 2.0
    unweighted = loss_terms(watch, skips, plays)["avg_watch_time_s"]
    assert unweighted[1].item() == 2.0


def test_skip_rate_loss_is_the_binomial_likelihood_per_play() -> None:
    logits = torch.tensor([0.3, -1.0, 2.0, 0.5])
    plays = torch.tensor([10.0, 4.0, 0.0, 1.0])
    skips = torch.tensor([3.0, 4.0, 0.0, 0.0])
    rate = torch.where(plays > 0, skips / plays.clamp(min=1), torch.tensor(math.nan))
    total, weight = loss_terms({"skip_rate": logits}, {"skip_rate": rate}, plays)["skip_rate"]
    p = torch.sigmoid(logits)
    nll = -(skips * p.log() + (plays - skips) * (1 - p).log())
    assert weight.item() == 15.0  # plays of the non-null rows
    assert total.item() == pytest.approx(nll[plays > 0].sum().item(), rel=1e-5)


def test_natural_units() -> None:
    out = to_natural_units({"skips": torch.tensor([math.log1p(4.0)]), "skip_rate": torch.zeros(1)})
    assert out["skips"].item() == pytest.approx(4.0)
    assert out["skip_rate"].item() == 0.5
    assert to_natural_units({"skips": torch.tensor([-0.1])})["skips"].item() == 0.0


def test_seeded_output_is_pinned() -> None:
    """Golden values: any change to initialisation order, a part's maths or the head order shows
    here (and would silently change every trained model and the README's numbers)."""
    torch.manual_seed(0)
    config = NetworkConfig(
        {"image_emb": 4, "creator": 3},
        {"language": 5},
        shape(width=4, cross_rank=2, mlp=(8,), group_dropout=0.25),
        tasks=("skips", "avg_watch_time_s", "full_watches", "skip_rate"),
    )
    model = QualityModel(config).eval()
    g = torch.Generator().manual_seed(1)
    x = {
        "image_emb": torch.randn(3, 4, generator=g),
        "creator": torch.randn(3, 3, generator=g),
        "language": torch.tensor([0, 2, 4]),
    }
    with torch.no_grad():
        out = model(x)
    golden = {
        "skips": [-0.014161, -0.060155, -0.013291],
        "avg_watch_time_s": [-0.131479, -0.264089, -0.275183],
        "full_watches": [-0.170323, 0.233358, -0.213048],
        "skip_rate": [-0.049737, -0.011175, -0.050745],
    }
    assert list(out) == list(golden)
    for task, values in golden.items():
        torch.testing.assert_close(out[task], torch.tensor(values), rtol=0, atol=2e-6)
