"""The multi-task quality network: DLRM pairwise interactions + a DCN-v2 low-rank cross net.

The model is assembled from small named parts, in the style of torchrec's ``crossnet.py`` and
``dlrm.py``::

    features ─► GroupProjection ─► GroupDropout ─► [B, G, W]
        ─┬─► flatten ─► LowRankCrossNet ─► [B, G*W] ───┐
         └─► PairwiseInteraction ─► [B, G(G-1)/2] ─────┴─► concat
        ─► MLP ─► [B, H] ─► TaskHeads ─► {task: [B]}

Every feature group is optional: the model is built from whatever groups ``NetworkConfig`` names,
which is how the feature ablation (embeddings only / creator only / ...) is trained. Groups are
dense vectors, categorical indices, or texts (a caption) as bags of hashed n-gram ids
(``ngrams.py``) whose embeddings are learnt with the rest of the network.

Heads output *training-space* values (log1p of counts and times, logits of shares, log rates,
popularity scores; see ``kinds.py``); ``to_natural_units`` turns them into the units a consumer
wants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vq_assets.core.model import tasks as tasks_
from vq_assets.core.model.ngrams import NgramHashing
from vq_assets.core.model.popularity import PopularityScale
from vq_assets.core.model.settings import ModelShape


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of a ``QualityModel``: the data's feature groups, the shape, the heads.
    JSON-serialisable through ``to_dict``/``from_dict``.

    Args:
        dense_dims: dense group name -> feature width, e.g. ``{"image_emb": 256}``.
        cat_cardinalities: categorical group name -> number of categories; inputs are int64
            indices in ``[0, cardinality)``.
        shape: widths and depths (``ModelShape``; its defaults are production's).
        tasks: which heads to build, by catalogue name (default: the whole catalogue).
        popularity: the scale that turns the popularity head's score into classes (fitted on
            the training days), when the model has that head.
        loss_scale: task -> factor of its loss (default 1), from its training labels
            (``kinds.Kind.loss_scale``): 1 / variance for log1p targets, 1 / the pooled rate
            for a rate, so that every head learns at the pace of the others.
        text_hashing: text group name -> how its texts become n-gram ids (saved with the model,
            so that scoring computes the ids training saw); inputs are ``[B, L]`` integer ids,
            0 = padding.
    """

    dense_dims: dict[str, int] = field(default_factory=dict)
    cat_cardinalities: dict[str, int] = field(default_factory=dict)
    shape: ModelShape = field(default_factory=ModelShape)
    tasks: tuple[str, ...] = field(default_factory=tasks_.names)
    popularity: PopularityScale | None = None
    loss_scale: dict[str, float] = field(default_factory=dict)
    text_hashing: dict[str, NgramHashing] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("NetworkConfig needs at least one feature group")
        overlap = sorted({g for g in self.groups if self.groups.count(g) > 1})
        if overlap:
            raise ValueError(f"groups both dense and categorical, or text: {overlap}")
        unknown = [t for t in self.tasks if t not in tasks_.names()]
        if unknown or not self.tasks:
            raise ValueError(
                f"tasks must be a non-empty subset of {list(tasks_.names())}: {unknown}"
            )
        if any(d <= 0 for d in self.dense_dims.values()):
            raise ValueError(f"dense dims must be positive: {self.dense_dims}")
        if any(c <= 0 for c in self.cat_cardinalities.values()):
            raise ValueError(f"cardinalities must be positive: {self.cat_cardinalities}")

    @property
    def groups(self) -> tuple[str, ...]:
        """Group order of the ``G`` axis: dense groups, then categorical, then text ones."""
        return (*self.dense_dims, *self.cat_cardinalities, *self.text_hashing)

    def single(self) -> NetworkConfig:
        """The same network as one member (what each member of an ensemble is)."""
        return replace(self, shape=replace(self.shape, members=1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dense_dims": dict(self.dense_dims),
            "cat_cardinalities": dict(self.cat_cardinalities),
            "text_hashing": {g: h.to_dict() for g, h in self.text_hashing.items()},
            "shape": {**asdict(self.shape), "mlp": list(self.shape.mlp)},
            "tasks": list(self.tasks),
            "popularity": None if self.popularity is None else self.popularity.to_dict(),
            "loss_scale": dict(self.loss_scale),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NetworkConfig:
        d = dict(d)
        # Files written before the shape had its own dataclass hold its fields flat.
        shape = d.pop("shape", None) or {
            f.name: d.pop(f.name) for f in fields(ModelShape) if f.name in d
        }
        shape = {**shape, "mlp": tuple(shape.get("mlp", ModelShape.mlp))}
        # Older files predate group dropout and the watch-time prior: they were trained without.
        shape.setdefault("group_dropout", 0.0)
        shape.setdefault("watch_time_prior_plays", 0.0)
        return cls(
            dense_dims=d["dense_dims"],
            cat_cardinalities=d["cat_cardinalities"],
            text_hashing={
                g: NgramHashing.from_dict(h) for g, h in d.get("text_hashing", {}).items()
            },
            shape=ModelShape(**shape),
            tasks=tuple(d["tasks"]),
            popularity=(
                PopularityScale.from_dict(d["popularity"]) if d.get("popularity") else None
            ),
            loss_scale=d.get("loss_scale", {}),
        )


class GroupProjection(nn.Module):
    """Projects every feature group to a common width.

    Dense groups go through a small bottom MLP, ``Linear -> ReLU -> Linear``, as in DLRM (no
    LayerNorm: it would erase the magnitude of numeric groups such as follower counts, which
    carry the signal); categorical groups through ``nn.Embedding``; text groups through
    ``nn.EmbeddingBag`` (the mean of their n-gram ids' ``text_dim``-wide embeddings, padding
    left out, so an empty text gives zeros), then the dense groups' bottom MLP.

    Args:
        dense_dims: dense group name -> input width ``d_g``.
        cat_cardinalities: categorical group name -> cardinality.
        width: output width W.
        text_buckets: text group name -> number of hash buckets (ids ``1..buckets``).
        text_dim: width of the n-gram embeddings.

    Call Args:
        features: ``{name: [B, d_g] float}`` for dense groups, ``{name: [B] int64}`` for
            categorical ones, ``{name: [B, L] int}`` n-gram ids for text ones; extra keys are
            ignored.

    Returns:
        torch.Tensor: ``[B, G, W]`` with G the number of groups, in dense, categorical, text
        order.
    """

    def __init__(
        self,
        dense_dims: Mapping[str, int],
        cat_cardinalities: Mapping[str, int],
        width: int,
        text_buckets: Mapping[str, int] | None = None,
        text_dim: int = 32,
    ) -> None:
        super().__init__()

        def bottom(dim: int) -> list[nn.Module]:
            return [nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width)]

        self.dense = nn.ModuleDict(
            {name: nn.Sequential(*bottom(dim)) for name, dim in dense_dims.items()}
        )
        self.embeddings = nn.ModuleDict(
            {name: nn.Embedding(card, width) for name, card in cat_cardinalities.items()}
        )
        self.texts = nn.ModuleDict(
            {
                name: nn.Sequential(
                    nn.EmbeddingBag(buckets + 1, text_dim, mode="mean", padding_idx=0),
                    *bottom(text_dim),
                )
                for name, buckets in (text_buckets or {}).items()
            }
        )

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        vectors = [proj(features[name]) for name, proj in self.dense.items()]
        vectors += [emb(features[name]) for name, emb in self.embeddings.items()]
        vectors += [bag(features[name]) for name, bag in self.texts.items()]
        return torch.stack(vectors, dim=1)


class GroupDropout(nn.Module):
    """Drops whole feature groups: in training, each row's group vector is zeroed with
    probability ``p`` (the survivors scaled by ``1 / (1 - p)``); the identity in eval mode.

    With a few thousand noisy labels the network otherwise leans on whichever group it fits
    first and memorises through it (validation loss turns up after 2 epochs) before it has
    learnt the slower signal in the others; having to predict without any one group forces it
    to use them all.

    Call Args:
        groups: ``[B, G, W]``.

    Returns:
        torch.Tensor: ``[B, G, W]``.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return groups
        keep = torch.rand(groups.shape[0], groups.shape[1], 1, device=groups.device) >= self.p
        return groups * keep.to(groups.dtype) / (1.0 - self.p)


class PairwiseInteraction(nn.Module):
    """DLRM feature interaction: dot products between every pair of group vectors.

    Call Args:
        groups: ``[B, G, W]``.

    Returns:
        torch.Tensor: ``[B, G*(G-1)/2]``, the strictly upper triangle of ``groups @ groups^T``
        (empty when G = 1).
    """

    def __init__(self, num_groups: int) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_groups, num_groups, offset=1)
        # Buffers, not parameters: they move with .to(device) and are not trained.
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    @property
    def out_features(self) -> int:
        return int(self.rows.numel())

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(groups, groups.transpose(1, 2))
        return gram[:, self.rows, self.cols]


class LowRankCrossNet(nn.Module):
    r"""DCN-v2 cross network with low-rank cross matrices (torchrec ``LowRankCrossNet``).

    .. math ::
        x_{l+1} = x_0 * (U_l (V_l x_l) + b_l) + x_l

    where ``V_l`` is ``[r, N]`` and ``U_l`` is ``[N, r]``, so a layer costs ``2 N r`` instead of
    ``N^2`` multiply-adds.

    Args:
        in_features: N.
        num_layers: number of cross layers (0 makes the module the identity).
        low_rank: r.

    Call Args:
        x: ``[B, N]``.

    Returns:
        torch.Tensor: ``[B, N]``.
    """

    def __init__(self, in_features: int, num_layers: int, low_rank: int) -> None:
        super().__init__()
        self.V = nn.ParameterList(
            nn.Parameter(nn.init.xavier_normal_(torch.empty(low_rank, in_features)))
            for _ in range(num_layers)
        )
        self.U = nn.ParameterList(
            nn.Parameter(nn.init.xavier_normal_(torch.empty(in_features, low_rank)))
            for _ in range(num_layers)
        )
        self.bias = nn.ParameterList(
            nn.Parameter(torch.zeros(in_features)) for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0, xl = x, x
        for V, U, b in zip(self.V, self.U, self.bias, strict=True):
            xl = x0 * (F.linear(F.linear(xl, V), U) + b) + xl
        return xl


class MLP(nn.Module):
    """``Linear -> ReLU -> Dropout`` per hidden size.

    Call Args:
        x: ``[B, in_features]``.

    Returns:
        torch.Tensor: ``[B, sizes[-1]]`` (``[B, in_features]`` when ``sizes`` is empty).
    """

    def __init__(self, in_features: int, sizes: Sequence[int], dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for size in sizes:
            layers += [nn.Linear(in_features, size), nn.ReLU(), nn.Dropout(dropout)]
            in_features = size
        self.layers = nn.Sequential(*layers)
        self.out_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TaskHeads(nn.Module):
    """One linear head per task.

    Call Args:
        x: ``[B, H]``.

    Returns:
        dict[str, torch.Tensor]: ``{task: [B]}`` in training space (log1p value or logit).
    """

    def __init__(self, in_features: int, tasks: Sequence[str]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({task: nn.Linear(in_features, 1) for task in tasks})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {task: head(x).squeeze(-1) for task, head in self.heads.items()}


class QualityModel(nn.Module):
    """The assembled network; see the module docstring for the data flow.

    Call Args:
        features: ``{group: [B, d_g] float32 | [B] int64 | [B, L] int64}`` (dense features
            already normalised, texts as n-gram ids).

    Returns:
        dict[str, torch.Tensor]: ``{task: [B]}`` in training space.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        num_groups = len(config.groups)
        flat = num_groups * config.shape.width
        shape = config.shape
        self.projection = GroupProjection(
            config.dense_dims,
            config.cat_cardinalities,
            shape.width,
            {g: h.buckets for g, h in config.text_hashing.items()},
            shape.text_dim,
        )
        self.group_dropout = GroupDropout(shape.group_dropout)
        self.interaction = PairwiseInteraction(num_groups)
        self.cross = LowRankCrossNet(flat, shape.cross_layers, shape.cross_rank)
        self.body = MLP(flat + self.interaction.out_features, shape.mlp, shape.dropout)
        self.heads = TaskHeads(self.body.out_features, config.tasks)

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        groups = self.group_dropout(self.projection(features))
        crossed = self.cross(groups.flatten(1))
        shared = self.body(torch.cat([crossed, self.interaction(groups)], dim=1))
        return self.heads(shared)

    @torch.no_grad()
    def init_head_bias(self, bias: Mapping[str, float]) -> None:
        """Start each head at a base rate (e.g. the train mean of log1p(target)), so early epochs
        learn the signal rather than the intercept."""
        for task, value in bias.items():
            self.heads.heads[task].bias.fill_(value)


class QualityEnsemble(nn.Module):
    """The average of ``config.shape.members`` QualityModels trained from different seeds.

    Outputs are averaged in training space (log1p values, skip-rate logits), which lowers the
    variance of a single network's predictions at ``members`` times the cost.

    Call Args / Returns: as ``QualityModel``.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        single = config.single()
        self.members = nn.ModuleList(QualityModel(single) for _ in range(config.shape.members))

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = [m(features) for m in self.members]
        return {t: torch.stack([o[t] for o in outputs]).mean(0) for t in self.config.tasks}


def build_model(config: NetworkConfig) -> QualityModel | QualityEnsemble:
    return QualityModel(config) if config.shape.members == 1 else QualityEnsemble(config)


def to_natural_units(outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Training-space head outputs -> natural units (each task's ``Kind.natural``)."""
    return {name: tasks_.task(name).behaviour.natural(out) for name, out in outputs.items()}


def loss_terms(
    outputs: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    plays: torch.Tensor,
    watch_time_prior_plays: float = 0.0,
    loss_scale: Mapping[str, float] | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-task ``(summed loss, weight)`` over a batch; the task loss is ``sum / weight``.

    Returned as sums rather than means so that losses can be reduced over several batches or
    ranks exactly (a data-parallel step divides every rank's sum by the *global* weight).

    - log1p tasks: squared error of ``log1p(target)``; weight = number of non-null rows, except
      a ``mean_over_plays`` task with ``watch_time_prior_plays`` k > 0: ``plays / (plays + k)``
      per row.
    - binomial tasks: ``-(k log p + (plays - k) log(1 - p))`` = ``plays * BCE(p, rate)``;
      weight = total plays, i.e. the loss is the binomial NLL per play.
    - rate tasks: the Poisson NLL per play, ``λ - r log λ`` weighted by plays.
    - ordinal tasks: squared error of the popularity score; weight = non-null rows.

    Null (NaN) targets are masked out with zero weights instead of boolean indexing, so every
    head stays in the autograd graph even for a batch without labels (DDP needs that).

    Args:
        outputs: ``{task: [B]}`` training-space outputs.
        targets: ``{task: [B]}`` natural-unit float targets, NaN for null.
        plays: ``[B]`` play counts.
        watch_time_prior_plays: see ``ModelShape``.
        loss_scale: task -> factor of its per-row loss (``NetworkConfig.loss_scale``).
    """
    terms = {}
    for name, out in outputs.items():
        task = tasks_.task(name)
        target = targets[name]
        valid = ~torch.isnan(target)
        clean = torch.where(valid, target, torch.zeros_like(target))
        per_row, weight = task.behaviour.loss(out.float(), clean, valid, plays.float())
        per_row = per_row * (loss_scale or {}).get(name, 1.0)
        if task.mean_over_plays and watch_time_prior_plays > 0:
            weight = weight * plays.float() / (plays.float() + watch_time_prior_plays)
        terms[name] = ((per_row * weight).sum(), weight.sum())
    return terms
