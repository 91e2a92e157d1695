"""The task catalogue: every prediction target of the quality model, once (DESIGN §4).

Labels -> features -> model heads -> losses -> metrics -> scores -> the flywheel's quality score
-> the evaluation tables all iterate over ``catalogue()``; nothing else lists tasks. Adding a task
is adding one ``Task`` here (its label column must exist in the label table).

Code reads the catalogue through ``catalogue()``/``task()`` at call time, never by copying it at
import, so that a catalogue extended at run time (a toy task in a test) reaches every stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vq_assets.core.model.kinds import KINDS, Kind

# What each kind means for heads, losses, recalibration and metrics: see kinds.py.
TaskKind = Literal["log1p", "binomial", "rate", "ordinal"]


@dataclass(frozen=True)
class Task:
    """One prediction target.

    Args:
        name: head and config name.
        label: column of ``video_labels_7d`` it learns from (natural units, null = unknown); an
            ``ordinal`` task's label is derived from several columns (``popularity.py``).
        kind: see ``kinds.py``.
        stem: MLflow metric stem (the seed system's naming): ``val_{stem}_SpearmanCorr``.
        prediction: column of ``quality_scores`` holding the prediction in natural units.
        unit: what one unit of the prediction is, for people.
        flywheel_weight: default weight of the within-day z-score of this prediction in the
            quality score (sign: + for "more is better"); overridable in the run config.
        mean_over_plays: the label is a mean over the video's plays, so its loss weight is
            ``plays / (plays + k)`` (inverse variance; k = ``ModelShape.watch_time_prior_plays``).
        reference_spearman: what the production system vq is modelled on reported, when known.
        score_0_100: ``quality_scores`` also carries ``{name}_score_0_100``, ViraNova's 0-100
            scaling: the percentile of the prediction among the videos created the same day.
    """

    name: str
    label: str
    kind: TaskKind
    stem: str
    prediction: str
    unit: str
    flywheel_weight: float = 0.0
    mean_over_plays: bool = False
    reference_spearman: float | None = None
    score_0_100: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"task {self.name!r}: kind must be one of {list(KINDS)}, not {self.kind!r}"
            )

    @property
    def behaviour(self) -> Kind:
        return KINDS[self.kind]

    @property
    def is_count(self) -> bool:
        return self.kind == "log1p"

    @property
    def score_column(self) -> str:
        return f"{self.name}_score_0_100"


CATALOGUE: tuple[Task, ...] = (
    Task(
        "skips",
        label="skips",
        kind="log1p",
        stem="e_item_timespent_0to3",
        prediction="pred_skips",
        unit="plays under 3 s in 7 days",
        flywheel_weight=-0.25,
        reference_spearman=0.755,
    ),
    Task(
        "avg_watch_time_s",
        label="avg_watch_time_s",
        kind="log1p",
        stem="e_avg_watch_time",
        prediction="pred_avg_watch_time_s",
        unit="seconds per play",
        flywheel_weight=0.5,
        mean_over_plays=True,
        reference_spearman=0.435,
    ),
    Task(
        "full_watches",
        label="full_watches",
        kind="log1p",
        stem="e_num_full_watch",
        prediction="pred_full_watches",
        unit="plays to the end in 7 days",
        flywheel_weight=0.5,
        reference_spearman=0.573,
    ),
    Task(
        "skip_rate",
        label="skip_rate",
        kind="binomial",
        stem="p_item_skip_ctr_7d",
        prediction="pred_skip_rate",
        unit="share of plays under 3 s",
        flywheel_weight=-1.0,
        reference_spearman=0.282,
    ),
    # Popularity and engagement (ViraNova, Bilibili). Their flywheel weight is 0 by default:
    # the flywheel's goal is fewer skips of cold-start videos; a platform that wants reach or
    # engagement in the score sets the weight in the run config.
    Task(
        "plays",
        label="plays",
        kind="log1p",
        stem="e_plays",
        prediction="pred_plays",
        unit="views in 7 days",
        score_0_100=True,
    ),
    Task(
        "engagement_rate",
        label="engagement_rate",
        kind="rate",
        stem="e_engagement_rate",
        prediction="pred_engagement_rate",
        unit="(likes + comments) per view",
        score_0_100=True,
    ),
    Task(
        "virality",
        label="virality",
        kind="log1p",
        stem="e_virality",
        prediction="pred_virality",
        unit="(day-0 views + 7-day views) per follower at creation",
        score_0_100=True,
    ),
    Task(
        "popularity",
        label="popularity",
        kind="ordinal",
        stem="c_popularity",
        prediction="pred_popularity_score",
        unit="composite popularity score (z units of the training days)",
    ),
)


def catalogue() -> tuple[Task, ...]:
    """Every task, in head order."""
    return CATALOGUE


def names() -> tuple[str, ...]:
    return tuple(t.name for t in catalogue())


def task(name: str) -> Task:
    for t in catalogue():
        if t.name == name:
            return t
    raise KeyError(f"unknown task {name!r}; the catalogue has {list(names())}")


def ordinal() -> Task | None:
    """The catalogue's ordinal (popularity class) task, if it has one; it has at most one,
    since one ``PopularityScale`` serves a model."""
    found = [t for t in catalogue() if t.kind == "ordinal"]
    if len(found) > 1:
        raise ValueError(f"the catalogue has {len(found)} ordinal tasks; one scale serves one")
    return found[0] if found else None


def flywheel_weights(overrides: dict[str, float] | None = None) -> dict[str, float]:
    """Each task's weight in the quality score: the catalogue's default unless overridden."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(names()))
    if unknown:
        raise ValueError(f"flywheel weights for unknown tasks {unknown}; tasks: {list(names())}")
    return {t.name: overrides.get(t.name, t.flywheel_weight) for t in catalogue()}
