"""The demo's closing report, read back from the lake like any other consumer would."""

import base64
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from vq_assets.core.evaluation.modality import SECTION as MODALITY
from vq_assets.core.evaluation.modality import modality_markdown
from vq_assets.core.evaluation.prior_worth import PriorWorth, prior_worth
from vq_assets.core.labels.windows import WINDOW_DAYS, shift
from vq_assets.core.lake.store import Lake
from vq_assets.core.model import tasks
from vq_assets.core.model.features import ABLATIONS, FULL_MODEL, WITHOUT_RETRIEVAL
from vq_assets.core.model.registry import default_tracking_uri
from vq_assets.core.related import week as cdml_week
from vq_assets.resources import vq_home

# What the production system vq is modelled on reported for its skip-rate calibration.
REFERENCE_CALIBRATION = 0.996
# What the Bilibili cover-and-title study reported for its 5 popularity classes.
BILIBILI_ACCURACY = 0.62


def _latest(lake: Lake, asset: str) -> tuple[str, pa.Table] | None:
    days = lake.list_days(lake.asset_dir(asset))
    return (days[-1], lake.read_table(lake.asset_file(asset, days[-1]))) if days else None


def _value(rows: list[dict], section: str, variant: str, metric: str) -> float:
    for r in rows:
        if (r["section"], r["variant"], r["metric"], r["slice"]) == (
            section,
            variant,
            metric,
            "all",
        ):
            return r["value"]
    return float("nan")


def evaluation_tables(rows: list[dict]) -> str:
    """The model against the reference, the baselines and the best achievable; the ablation."""
    head = (
        f"{'task (test Spearman)':<22}{'vq model':>10}{'reference':>11}{'creator mean':>14}"
        f"{'LightGBM':>10}{'best achievable':>17}{'% of best':>11}"
    )
    lines = [head, "-" * len(head)]
    for task in tasks.catalogue():
        stem = task.stem
        model = _value(rows, "model", FULL_MODEL, f"val_{stem}_SpearmanCorr")
        best = _value(rows, "best_achievable", "simulator_truth", f"{stem}_SpearmanCorr")
        reference = task.reference_spearman or float("nan")
        lines.append(
            f"{task.name:<22}{model:>10.3f}{reference:>11.3f}"
            f"{_value(rows, 'baseline', 'creator_prior_mean', f'val_{stem}_SpearmanCorr'):>14.3f}"
            f"{_value(rows, 'baseline', 'lightgbm', f'val_{stem}_SpearmanCorr'):>10.3f}"
            f"{best:>17.3f}{100 * model / best if best > 0 else float('nan'):>10.0f}%"
        )
    cal = _value(rows, "model", FULL_MODEL, "val_p_item_skip_ctr_7d_calibration")
    lines.append(f"skip-rate calibration: {cal:.3f} (reference {REFERENCE_CALIBRATION})")
    lines += _class_table(rows)
    if any(r["section"] == "model_vs_baseline" for r in rows):  # older evaluations lack it
        lines += ["", f"{'model - baseline':<22}{'creator mean':>26}{'LightGBM':>26}"]
        lines.append(
            "(test Spearman gap, 95% paired-bootstrap interval; one containing 0 is a tie)"
        )
        for task in tasks.catalogue():
            stem, cells = task.stem, []
            for baseline in ("creator_prior_mean", "lightgbm"):
                gap, low, high = (
                    _value(rows, "model_vs_baseline", baseline, f"val_{stem}_SpearmanGap{end}")
                    for end in ("", "_ci95_low", "_ci95_high")
                )
                cells.append(f"{gap:+.3f} [{low:+.3f}, {high:+.3f}]")
            lines.append(f"{task.name:<22}" + "".join(f"{c:>26}" for c in cells))
    width = max(len(t) for t in tasks.names()) + 2
    lines += [
        "",
        f"{'ablation (test Spearman)':<26}" + "".join(f"{t:>{width}}" for t in tasks.names()),
    ]
    variants = sorted(
        {r["variant"] for r in rows if r["section"] == "ablation"}, key=list(ABLATIONS).index
    )
    for v in variants:
        vals = [
            _value(rows, "ablation", v, f"val_{t.stem}_SpearmanCorr") for t in tasks.catalogue()
        ]
        lines.append(f"{v:<26}" + "".join(f"{x:>{width}.3f}" for x in vals))
    if any(r["section"] == "retrieval_prior" for r in rows):  # models without the prior lack it
        lines += [
            "",
            f"{'retrieval prior':<22}{'gain [95% interval]':>26}",
            f"(test Spearman of {FULL_MODEL} - {WITHOUT_RETRIEVAL}, paired bootstrap)",
        ]
        for task in tasks.catalogue():
            gain, low, high = (
                _value(
                    rows, "retrieval_prior", WITHOUT_RETRIEVAL, f"val_{task.stem}_SpearmanGap{e}"
                )
                for e in ("", "_ci95_low", "_ci95_high")
            )
            lines.append(f"{task.name:<22}{f'{gain:+.3f} [{low:+.3f}, {high:+.3f}]':>26}")
    return "\n".join(lines)


def _class_table(rows: list[dict]) -> list[str]:
    """The popularity classes: the model against the creator's prior class and LightGBM."""
    task = tasks.ordinal()
    if task is None:
        return []
    metrics = ("accuracy", "within_one_accuracy", "macro_F1", "QWK")
    lines = ["", f"{task.name + ' classes (test)':<26}" + "".join(f"{m:>21}" for m in metrics)]
    for label, section, variant in (
        ("vq model", "model", FULL_MODEL),
        ("creator prior class", "baseline", "creator_prior_mean"),
        ("LightGBM", "baseline", "lightgbm"),
    ):
        vals = [_value(rows, section, variant, f"val_{task.stem}_{m}") for m in metrics]
        lines.append(f"{label:<26}" + "".join(f"{x:>21.3f}" for x in vals))
    lines.append(f"(the Bilibili study reports accuracy {BILIBILI_ACCURACY} on its 5 classes)")
    return lines


def inline_png(data: bytes, title: str) -> str:
    """Markdown that shows a PNG in the Dagster UI's metadata panel (a data URI: no server)."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(data).decode()})"


def metrics_markdown(metrics: dict[str, float]) -> str:
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    return "\n".join(lines)


def demo_lists_markdown(demo: pa.Table) -> str:
    """The demo lists as a Markdown table for the Dagster UI."""
    lines = [
        "| list | rank | pred skip rate | true skip rate | plays | caption |",
        "|---|---|---|---|---|---|",
    ]
    for r in demo.to_pylist():
        true = r["skip_rate"] if r["skip_rate"] is None else round(r["skip_rate"], 3)
        lines.append(
            f"| {r['list']} | {r['rank']} | {r['pred_skip_rate']:.3f} | {true} | "
            f"{r['plays']} | {(r['caption'] or '')[:60]} |"
        )
    return "\n".join(lines)


def prior_worth_of_lake(lake: Lake) -> PriorWorth | None:
    """ "The prior is worth N impressions" on the days that were scored (out of sample) and
    have labels: their videos' early plays from the `watch_events` of their windows. None
    without such a day or without watch events."""
    days = sorted(
        set(lake.list_days(lake.asset_dir("quality_scores")))
        & set(lake.list_days(lake.asset_dir("video_labels_7d")))
    )
    have = set(lake.list_days(lake.asset_dir("watch_events")))
    event_days = sorted({shift(d, i) for d in days for i in range(WINDOW_DAYS + 1)} & have)
    if not days or not event_days:
        return None
    scores = pa.concat_tables(
        lake.read_table(lake.asset_file("quality_scores", d), ["video_id", "pred_skip_rate"])
        for d in days
    )
    labels = pa.concat_tables(
        lake.read_table(
            lake.asset_file("video_labels_7d", d), ["video_id", "created_at", "skip_rate"]
        )
        for d in days
    )
    events = pa.concat_tables(
        lake.read_table(
            lake.asset_file("watch_events", d), ["video_id", "event_ts", "watch_time_s"]
        )
        for d in event_days
    )
    return prior_worth(events, scores.join(labels, "video_id", join_type="inner"))


def demo_report(lake: Lake, repo_root: Path) -> str:
    out = ["", "=" * 100, "vq demo report", "=" * 100]
    evaluation = _latest(lake, "model_evaluation")
    if evaluation is None:
        out.append("no model_evaluation yet: the replay did not reach a retraining week")
        return "\n".join(out)
    week, table = evaluation
    rows = table.to_pylist()
    out += [f"model v{rows[0]['model_version']} (week {week}), evaluated on its test days:", ""]
    out.append(evaluation_tables(rows))
    if any(r["section"] == MODALITY for r in rows):  # evaluations before the study lack it
        out += ["", "the modality study:", "", modality_markdown(rows, {})]
    demo = _latest(lake, "model_evaluation_demo")
    if demo is not None:
        for which in ("most_skippable", "least_skippable"):
            out += ["", f"the ten test videos predicted {which.replace('_', ' ')}:"]
            for r in demo[1].to_pylist():
                if r["list"] == which:
                    true = "n/a" if r["skip_rate"] is None else f"{r['skip_rate']:.2f}"
                    out.append(
                        f"  {r['pred_skip_rate']:.2f} predicted / {true} true skip rate, "
                        f"{r['plays']:>5} plays  {(r['caption'] or '(no caption)')[:60]}"
                    )
    lifts = [
        lake.read_table(lake.asset_file("flywheel_lift", d)).to_pylist()[0]
        for d in lake.list_days(lake.asset_dir("flywheel_lift"))
    ]
    if lifts:
        skip = np.nanmean([x["skip_rate_lift"] for x in lifts])
        watch = np.nanmean([x["avg_watch_time_s_lift"] for x in lifts])
        out += [
            "",
            f"flywheel lift over {len(lifts)} labelled days: sampling with the weights instead "
            f"of uniformly changes the realised skip rate by {100 * skip:+.1f}% and the average "
            f"watch time by {100 * watch:+.1f}%",
        ]
    worth = prior_worth_of_lake(lake)
    if worth is not None:
        out += ["", f"{worth.summary()} (skip rate, scored and labelled days):"]
        for r in worth.table.to_pylist():
            out.append(
                f"  first {r['n_plays']:>2} plays: Spearman {r['early_spearman']:.3f} vs vq "
                f"{r['vq_spearman']:.3f} on {r['videos']:>5} videos, gap {r['gap']:+.3f} "
                f"[{r['gap_ci_low']:+.3f}, {r['gap_ci_high']:+.3f}]"
            )
    cdml = _latest(lake, "cdml_evaluation")
    if cdml is not None:
        out += [
            "",
            f"related videos (CDML tower of week {cdml[0]}), on its held-out days: for each new "
            "video, its realised co-watch among the videos of the 28 days up to its day",
            "",
            cdml_week.metrics_markdown(cdml[1]),
        ]
    out += [
        "",
        "where to look:",
        "  Dagster UI:  make ui  ->  http://127.0.0.1:3000  (runs, asset graph, metadata, checks)",
        f"  MLflow:      {repo_root}/.venv/bin/mlflow ui --backend-store-uri "
        f"{os.environ.get('MLFLOW_TRACKING_URI') or default_tracking_uri(vq_home())} --port 5000",
        f"  the lake:    {lake.root}/assets/<asset>/dt=YYYY-MM-DD/part-0.parquet",
    ]
    return "\n".join(out)
