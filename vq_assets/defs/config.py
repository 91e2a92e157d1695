"""Dagster run config derived from core's settings dataclasses, field for field, so that the
defaults a user sees in the launchpad are the ones core holds (no copies to drift)."""

from __future__ import annotations

import typing
from typing import Any

import dagster as dg
import pydantic

from vq_assets.core.model.settings import fields_of, from_values, is_sequence


def _config_type(tp: Any) -> Any:
    # Dagster config has lists, not tuples.
    if is_sequence(tp):
        return list[typing.get_args(tp)[0]]
    return tp


class DerivedConfig(dg.Config):
    """Run config whose fields mirror settings dataclasses (see ``config_from``)."""

    def to(self, cls: type, **overrides: Any):
        """The settings dataclass ``cls`` from this config's values (and ``overrides``)."""
        return from_values(cls, {**self.model_dump(), **overrides})


def config_from(
    name: str, sources: tuple[type, ...], exclude: tuple[str, ...], **extra: tuple[type, Any]
) -> type[DerivedConfig]:
    """A ``dg.Config`` class with one field per field of the ``sources`` dataclasses (minus
    ``exclude``), with their defaults and help texts, plus ``extra`` ``name=(type, default)``;
    ``.to(cls)`` builds one of the source dataclasses back from a config value."""
    fields: dict[str, Any] = {}
    for source in sources:
        for f, tp in fields_of(source, exclude):
            default = list(f.default) if is_sequence(tp) else f.default
            fields[f.name] = (
                _config_type(tp),
                pydantic.Field(default=default, description=f.metadata.get("help")),
            )
    fields |= extra
    return pydantic.create_model(name, __base__=DerivedConfig, __module__=__name__, **fields)
