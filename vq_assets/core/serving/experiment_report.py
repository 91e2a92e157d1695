"""The flywheel A/B over several creation days: the pooled result, the per-day trend, and their
tables and plot (the `flywheel_experiment` asset's metadata, MLflow and `vq experiment`)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from vq_assets.core.lake.contract import VIDEOS_SCHEMA, WATCH_EVENTS_SCHEMA
from vq_assets.core.lake.store import Lake
from vq_assets.core.serving import experiment, flywheel
from vq_assets.core.serving.experiment import ARMS_TABLE, SCOPES, ExperimentResult

# The headline metrics, in the order the tables and plots show them.
HEADLINE = (
    "skip_rate",
    "watch_time_per_impression",
    "full_watch_rate",
    "engagement_rate",
    "discoverable_corpus",
    "creator_coverage",
    "exposure_gini",
)


@dataclass(frozen=True)
class Pooled:
    days: list[str]
    results: dict[str, ExperimentResult]  # by scope

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results.values())

    def table(self) -> pa.Table:
        return pa.concat_tables(self.results[s].table() for s in SCOPES)


def evaluate_days(
    lake: Lake, days: Sequence[str], event_days: Sequence[str], **options: Any
) -> Pooled:
    """`evaluate_files` over the lake's ingested videos of creation `days`, the watch events
    of `event_days` (their windows) and the days' `landing/experiment_arms`."""
    arms = [f for d in days for f in lake.list_files(lake.landing_dir(ARMS_TABLE, d))]
    if not arms:
        where = lake.uri(lake.landing_dir(ARMS_TABLE, days[0]))
        raise ValueError(f"no arm assignment for {days[0]}..{days[-1]}: nothing under {where}")
    return evaluate_files(
        lake,
        list(days),
        _files(lake, "raw_videos", days),
        _files(lake, "watch_events", event_days),
        arms,
        **options,
    )


def evaluate_files(
    lake: Lake,
    days: list[str],
    videos: Sequence[str],
    events: Sequence[str],
    arms: Sequence[str],
    **options: Any,
) -> Pooled:
    """`experiment.evaluate_experiment` in both scopes, on the videos of creation `days` (their
    ingested parquet files) and the events of their windows, with the arm assignment files (a
    user keeps one arm over the days: a user another day puts elsewhere is an error); videos
    flagged on those days count as flagged exposure. Only the rows of users with an arm on the
    days' videos reach Python (`experiment.day_tables`)."""
    con = duckdb.connect()
    try:
        lake.register(con, "videos", videos, VIDEOS_SCHEMA)
        lake.register(con, "events", events, WATCH_EVENTS_SCHEMA)
        lake.register(con, "arms", arms, lake.read_table(arms[0]).schema)
        video_rows, event_rows = experiment.day_tables(con, flywheel.flagged_ids(lake, days))
    finally:
        con.close()
    results = {
        s: experiment.evaluate_experiment(event_rows, video_rows, scope=s, **options)
        for s in SCOPES
    }
    return Pooled(days, results)


def _files(lake: Lake, asset: str, days: Sequence[str]) -> list[str]:
    files = [f for d in days for f in lake.list_files(lake.asset_dir(asset, d))]
    if not files:
        raise ValueError(f"no {asset} partitions for {days[0]}..{days[-1]} in {lake.root}")
    return files


def markdown(table: pa.Table) -> str:
    """The differences as a Markdown table: scope, metric, control, treatment, difference and
    its interval."""
    lines = [
        "| scope | metric | control | treatment | treatment - control | 95% interval |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in _headline_rows(table):
        lines.append(
            f"| {r['scope']} | {r['metric']} | {r['control']:.4f} | {r['treatment']:.4f} | "
            f"{r['difference']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] |"
        )
    return "\n".join(lines)


def _headline_rows(table: pa.Table) -> list[dict]:
    order = {m: i for i, m in enumerate(HEADLINE)}
    rows = [r for r in table.to_pylist() if r["metric"] in order]
    return sorted(rows, key=lambda r: (SCOPES.index(r.get("scope", "window")), order[r["metric"]]))


def trend_png(days: Sequence[str], tables: Sequence[pa.Table], scope: str = "cold_start") -> bytes:
    """One panel per headline metric: the daily treatment - control with its interval, over
    the creation days, in `scope`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(16, 7), constrained_layout=True)
    x = np.arange(len(days))
    for ax, metric in zip(axes.flat, HEADLINE, strict=False):
        rows = [_row(t, scope, metric) for t in tables]
        d = np.array([r["difference"] if r else np.nan for r in rows], dtype=float)
        lo = np.array([r["ci_low"] if r else np.nan for r in rows], dtype=float)
        hi = np.array([r["ci_high"] if r else np.nan for r in rows], dtype=float)
        ax.axhline(0.0, color="grey", lw=1)
        ax.fill_between(x, lo, hi, alpha=0.25)
        ax.plot(x, d, "o-", ms=3)
        ax.set_title(f"{metric} ({scope})", fontsize=9)
        ax.set_xticks(x[:: max(1, len(x) // 6)], [days[i][5:] for i in x[:: max(1, len(x) // 6)]])
    axes.flat[-1].axis("off")
    fig.suptitle("flywheel A/B by creation day: treatment - control, 95% interval")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def _row(table: pa.Table, scope: str, metric: str) -> dict | None:
    for r in table.to_pylist():
        if r["metric"] == metric and r.get("scope", "window") == scope:
            return r
    return None
