"""The quality model's settings, with the production defaults held once.

``ModelShape`` is the network's shape, ``TrainSettings`` the optimisation. The Dagster run config
(``defs/training.py``), the torchrun entry point (``core/model/train.py``) and ``bench/train.py``
are all derived from these two dataclasses field by field, so none of them can drift.

A sweep's winner is applied explicitly (``vq sweep --apply RUN_ID``, ``core/model/sweep.py``):
it writes ``applied_settings.json`` beside this module, whose values replace the defaults written
below when the dataclasses are built, so every derived consumer sees them, and the file is
reviewed and deployed with the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

Precision = Literal["fp32", "bf16", "fp16"]
# Runtime placement, not a modelling choice: set by the device resource or the command line.
RUNTIME_FIELDS = ("device", "precision", "checkpoint_dir", "num_workers")
# A sweep child's settings, written only by `vq sweep --apply` (see the module docstring).
APPLIED_FILE = Path(__file__).with_name("applied_settings.json")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def read_applied(path: Path = APPLIED_FILE) -> dict[str, Any]:
    """The applied file: ``{"settings": {field: value}, "sources": {field: sweep child run}}``;
    empty without one."""
    if not path.exists():
        return {"settings": {}, "sources": {}}
    return json.loads(path.read_text())


_APPLIED = read_applied()["settings"]


def with_defaults(values: dict[str, Any]) -> Callable[[type], type]:
    """A class decorator under ``@dataclass``: ``values`` replace the defaults of the fields
    they name (JSON lists become tuples)."""

    def decorate(cls: type) -> type:
        for name, value in values.items():
            value = tuple(value) if isinstance(value, list) else value
            f = cls.__dict__.get(name)
            if isinstance(f, dataclasses.Field):
                f.default = value
            elif name in cls.__annotations__:
                setattr(cls, name, value)
        return cls

    return decorate


@dataclass(frozen=True)
@with_defaults(_APPLIED)
class ModelShape:
    """Widths and depths of the network (DESIGN §6): what does not depend on the data."""

    width: int = field(default=128, metadata=_help("common width every feature group gets"))
    cross_layers: int = field(default=2, metadata=_help("DCN-v2 cross layers"))
    cross_rank: int = field(default=16, metadata=_help("rank of each cross layer's matrix"))
    mlp: tuple[int, ...] = field(default=(256, 128), metadata=_help("shared MLP hidden sizes"))
    dropout: float = field(default=0.1, metadata=_help("dropout after each MLP layer"))
    group_dropout: float = field(
        default=0.25,
        metadata=_help("probability of dropping a whole feature group per training row"),
    )
    members: int = field(
        default=5,
        metadata=_help("independently seeded networks averaged (variance down, cost x members)"),
    )
    watch_time_prior_plays: float = field(
        default=20.0,
        metadata=_help("k: a mean-over-plays label weighs plays / (plays + k) in the loss"),
    )
    text_dim: int = field(
        default=32,
        # Narrower than `width`: the table has a row per hash bucket (ngrams.NgramHashing).
        metadata=_help("width of a text group's n-gram embeddings, before the projection"),
    )

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"members must be >= 1, not {self.members}")
        if not 0.0 <= self.group_dropout < 1.0:
            raise ValueError(f"group_dropout must lie in [0, 1), not {self.group_dropout}")
        if self.watch_time_prior_plays < 0:
            raise ValueError(
                f"watch_time_prior_plays must be >= 0, not {self.watch_time_prior_plays}"
            )
        if self.width < 1 or self.text_dim < 1 or any(s < 1 for s in self.mlp):
            raise ValueError(
                f"width, text_dim and mlp sizes must be >= 1: {self.width}, {self.text_dim}, "
                f"{self.mlp}"
            )


@dataclass(frozen=True)
@with_defaults(_APPLIED)
class TrainSettings:
    """Optimisation settings; ``batch_size`` is global (split across ranks under torchrun)."""

    lr: float = field(default=2e-3, metadata=_help("AdamW learning rate"))
    weight_decay: float = field(default=1e-4, metadata=_help("AdamW decay of weight matrices"))
    batch_size: int = field(default=256, metadata=_help("global batch size"))
    max_epochs: int = field(default=30, metadata=_help("epochs at most per member"))
    patience: int = field(
        default=4, metadata=_help("stop after this many epochs without a lower validation loss")
    )
    seed: int = field(default=0, metadata=_help("member k trains with seed + k"))
    whiten: tuple[str, ...] = field(
        default=(),
        # Measured on the demo world: whitening the 64-d BLIP placeholder's image embedding
        # lifted every task; whitening EfficientNet-Lite0's 1280-d one lowers every task by
        # 0.02-0.05 (its hundreds of near-empty directions come out as unit-variance noise) and
        # let a member's loss explode (5e11); whitening MiniLM's text embedding lowers them too.
        metadata=_help("dense groups PCA-whitened before training (when the model uses them)"),
    )
    popularity_weights: tuple[float, ...] = field(
        default=(0.4, 0.3, 0.15, 0.15),
        metadata=_help(
            "weights of plays, likes, comments, shares in the composite popularity score "
            "(z-scores of log1p on the training days)"
        ),
    )
    device: str = field(default="cpu", metadata=_help("cpu, cuda, cuda:N or auto"))
    precision: Precision = field(default="fp32", metadata=_help("fp32, bf16 or fp16 (CUDA)"))
    checkpoint_dir: str | None = field(
        default=None, metadata=_help("checkpoint every epoch there, and resume from it")
    )
    num_workers: int = field(default=0, metadata=_help("DataLoader worker processes"))

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, not {self.precision!r}")
        if self.batch_size < 1 or self.max_epochs < 0 or self.patience < 1:
            raise ValueError(f"batch_size >= 1, max_epochs >= 0 and patience >= 1 needed: {self}")


_unknown = (
    set(_APPLIED) - set(ModelShape.__dataclass_fields__) - set(TrainSettings.__dataclass_fields__)
)
if _unknown:
    raise ValueError(f"{APPLIED_FILE} holds unknown settings {sorted(_unknown)}")

S = TypeVar("S")


def fields_of(cls: type, exclude: tuple[str, ...] = ()) -> list[tuple[dataclasses.Field, Any]]:
    """``(field, resolved type)`` of a settings dataclass, minus ``exclude``."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.name not in exclude]


def is_sequence(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def from_values(cls: type[S], values: dict[str, Any]) -> S:
    """Build ``cls`` from a mapping holding (at least) its fields; lists become tuples."""
    kwargs = {}
    for f, tp in fields_of(cls):
        if f.name in values:
            v = values[f.name]
            kwargs[f.name] = tuple(v) if is_sequence(tp) else v
    return cls(**kwargs)


def add_arguments(parser: argparse.ArgumentParser, cls: type, exclude: tuple[str, ...] = ()):
    """One ``--flag`` per field of ``cls``, defaulting to the dataclass default; a tuple field
    takes a comma-separated list (empty string = empty tuple)."""
    for f, tp in fields_of(cls, exclude):
        flag = "--" + f.name.replace("_", "-")
        help_ = f"{f.metadata.get('help', '')} (default: {f.default})"
        if is_sequence(tp):
            item = typing.get_args(tp)[0]
            parser.add_argument(
                flag,
                dest=f.name,
                type=lambda s, item=item: tuple(item(x) for x in s.split(",") if x),
                default=f.default,
                help=help_,
            )
        elif typing.get_origin(tp) is Literal:
            parser.add_argument(flag, dest=f.name, choices=typing.get_args(tp), default=f.default)
        else:
            base = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
            parser.add_argument(flag, dest=f.name, type=base, default=f.default, help=help_)


def from_arguments(cls: type[S], args: argparse.Namespace, **overrides: Any) -> S:
    values = {f.name: getattr(args, f.name) for f, _ in fields_of(cls) if hasattr(args, f.name)}
    return from_values(cls, {**values, **overrides})
