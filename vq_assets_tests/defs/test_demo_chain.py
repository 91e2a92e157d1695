"""The demo chain: a small simulated world replayed day by day through Dagster."""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from vq_assets.core.evaluation.prior_worth import PLAY_COUNTS
from vq_assets.core.lake.store import Lake
from vq_assets.core.model import registry, tasks
from vq_assets.core.serving.experiment import assign_arm
from vq_assets.core.sources.simulator import simulate_local
from vq_assets.definitions import build_definitions
from vq_assets.partitions import START_DATE
from vq_assets.replay import Replay
from vq_assets.report import demo_report, prior_worth_of_lake


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "lake"
    start = dt.date.fromisoformat(START_DATE)
    simulate_local(root, start, 26, 40, seed=3)
    with pytest.MonkeyPatch.context() as env:
        # MLflow exports the URI it last used; this test reads its own store.
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.setenv("VQ_LAKE", str(root))  # the lake resource reads it (dg.EnvVar) at each run
        defs = build_definitions()
        instance = dg.DagsterInstance.ephemeral()
        lake = Lake.local(root)
        replay = Replay(defs, instance, lake, train_days=28, min_train_days=10, log=lambda _: None)
        replay.run(START_DATE, "2026-01-26")
        yield lake, instance, replay, defs


def _read(lake: Lake, asset: str, day: str):
    return pq.read_table(lake.asset_file(asset, day))


def test_every_scored_day_uses_a_model_trained_before_it(replayed):
    lake, _, _, _ = replayed
    models = {
        d: _read(lake, "quality_model", d).to_pylist()[0]
        for d in lake.list_days(lake.asset_dir("quality_model"))
    }
    assert sorted(models) == ["2026-01-18", "2026-01-25"]
    scored = lake.list_days(lake.asset_dir("quality_scores"))
    assert scored[0] == "2026-01-18" and scored[-1] == "2026-01-26"
    for day in scored:
        scores = _read(lake, "quality_scores", day)
        week = max(w for w in models if w <= day and models[w]["promoted"])
        assert set(scores["model_version"].to_pylist()) == {models[week]["model_version"]}
        pct = scores["quality_percentile"].to_numpy()
        assert ((pct >= 0) & (pct <= 1)).all()
        weights = _read(lake, "flywheel_sampling_weights", day)["sampling_weight"].to_numpy()
        assert abs(weights.sum() - 1) < 1e-9


def test_training_window_is_closed_before_the_week(replayed):
    lake, _, _, _ = replayed
    days = _read(lake, "training_set", "2026-01-25")["day"].to_pylist()
    assert max(days).isoformat() == "2026-01-17"  # S - 8: its window closed when S began


def test_mlflow_registry_and_evaluation(replayed):
    lake, _, _, defs = replayed
    evaluation = _read(lake, "model_evaluation", "2026-01-25").to_pylist()
    model_metrics = {r["metric"] for r in evaluation if r["section"] == "model"}
    for stem in ("e_item_timespent_0to3", "e_avg_watch_time", "e_num_full_watch"):
        for m in ("MAE", "log1p_R2", "SpearmanCorr", "count", "loss"):
            assert f"val_{stem}_{m}" in model_metrics
    assert {"val_p_item_skip_ctr_7d_calibration", "val_loss"} <= model_metrics
    sections = {(r["section"], r["variant"]) for r in evaluation}
    assert {
        ("baseline", "lightgbm"),
        ("baseline", "creator_prior_mean"),
        ("ablation", "embeddings_only"),
        ("best_achievable", "simulator_truth"),
        ("model_vs_baseline", "lightgbm"),
    } <= sections
    gap = {
        r["metric"]: r["value"]
        for r in evaluation
        if (r["section"], r["variant"]) == ("model_vs_baseline", "creator_prior_mean")
    }
    stem = "val_e_num_full_watch_SpearmanGap"
    assert gap[f"{stem}_ci95_low"] <= gap[stem] <= gap[f"{stem}_ci95_high"]
    # The retrieval prior's value: the model against the same recipe without it, per task.
    assert ("ablation", "with_retrieval") in sections
    gain = {
        r["metric"]: r["value"]
        for r in evaluation
        if (r["section"], r["variant"]) == ("retrieval_prior", "both_language_length")
    }
    for task in tasks.catalogue():
        stem = f"val_{task.stem}_SpearmanGap"
        assert gain[f"{stem}_ci95_low"] <= gain[stem] <= gain[f"{stem}_ci95_high"], task.name
    demo = _read(lake, "model_evaluation_demo", "2026-01-25")
    assert demo.num_rows == 20
    # The modality study: every arm, including the cover's own vector, with its interval.
    arms = {v for s, v in sections if s == "modality"}
    assert arms == {
        "text_only",
        "image_only",
        "cover_only",
        "creator_only",
        "text_image",
        "all",
        "late_fusion",
        "text_regressor",
    }
    client = MlflowClient(defs.resources["mlflow_tracking"].tracking_uri)
    run_id = registry.read_record(lake, "2026-01-25").run_id
    plots = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/modality_spearman.png", "evaluation/text_regressor_loss.png"} <= plots
    assert client.get_metric_history(run_id, "text_regressor.train_loss")
    versions = client.search_model_versions(f"name='{registry.MODEL_NAME}'")
    assert len(versions) == 2
    assert registry.production_version(client) in {int(v.version) for v in versions}
    for v in (1, 2):
        model_dir = Path(registry.lake_model_dir(lake, v))
        files = sorted(p.name for p in model_dir.iterdir())
        assert files == ["config.json", "model.safetensors", "normalizer.json"]
        assert json.loads((model_dir / "config.json").read_text())


def test_flywheel_lift_once_labels_exist(replayed):
    lake, _, _, _ = replayed
    lifts = lake.list_days(lake.asset_dir("flywheel_lift"))
    assert lifts == ["2026-01-18", "2026-01-19"]
    row = _read(lake, "flywheel_lift", "2026-01-18").to_pylist()[0]
    assert row["videos_with_labels"] > 0 and np.isfinite(row["skip_rate_weighted"])


def test_replay_resumes_without_redoing_work(replayed):
    lake, instance, replay, _ = replayed
    before = replay.runs
    replay.run("2026-01-20", "2026-01-26")
    assert replay.runs == before


def test_ui_plots_get_float_metadata(replayed):
    _, instance, _, _ = replayed

    def metadata(asset: str) -> dict:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        return event.asset_materialization.metadata

    evaluation = metadata("model_evaluation")
    assert "| late_fusion |" in evaluation["modality"].value
    for task in ("skips", "avg_watch_time_s", "full_watches", "skip_rate"):
        for key in ("test_spearman", "gap_to_lightgbm", "gap_ci95_low", "gap_ci95_high"):
            assert isinstance(evaluation[f"{task}.{key}"], dg.FloatMetadataValue), (task, key)
        low, gap, high = (
            evaluation[f"{task}.{k}"].value
            for k in ("gap_ci95_low", "gap_to_lightgbm", "gap_ci95_high")
        )
        assert low <= gap <= high
        assert 0 < evaluation[f"{task}.share_of_best"].value < 1.5
        assert isinstance(evaluation[f"{task}.retrieval_gain"], dg.FloatMetadataValue)
    assert evaluation["skips.mae"].value > 0 and evaluation["skip_rate.calibration"].value > 0
    model = metadata("quality_model")
    assert isinstance(model["best_val_loss"], dg.FloatMetadataValue)
    assert isinstance(model["val_loss.skip_rate"], dg.FloatMetadataValue)
    assert isinstance(metadata("raw_videos")["quarantine_share"], dg.FloatMetadataValue)


def test_flywheel_experiment_runs_where_arms_exist_and_blocks_on_a_guardrail(replayed):
    lake, instance, _, defs = replayed
    day = "2026-01-18"
    job = defs.resolve_job_def("experiment")

    def run(**tolerances):
        config = {"resamples": 50, "discoverable_plays": 3, **tolerances}
        return job.execute_in_process(
            instance=instance,
            partition_key=day,
            raise_on_error=False,
            run_config={"ops": {"flywheel_experiment": {"config": config}}},
        )

    without_arms = run()
    assert not without_arms.success  # most days have no experiment: refused, with the reason
    users = sorted(
        {
            u
            for d in ("2026-01-18", "2026-01-20", "2026-01-25")
            for f in lake.list_files(lake.landing_dir("watch_events", d))
            for u in lake.read_table(f, ["user_id"])["user_id"].to_pylist()
        }
    )
    arms = pa.table({"user_id": users, "arm": assign_arm(users, 0.5, salt="e2e")})
    lake.write_table(lake.landing_dir("experiment_arms", day), arms)

    loose = run(
        skip_rate_max_rise=1.0, gini_max_rise=1.0, coverage_max_fall=1.0, discoverable_max_fall=1.0
    )
    assert loose.success
    (check,) = loose.get_asset_check_evaluations()
    assert check.passed  # an A/A split: both arms saw the same policy
    table = _read(lake, "flywheel_experiment", day)
    rows = {r["metric"]: r for r in table.to_pylist()}
    assert {"skip_rate", "exposure_gini", "creator_coverage", "discoverable_corpus"} <= set(rows)
    assert 0 <= rows["skip_rate"]["control"] <= 1
    assert (
        rows["skip_rate"]["ci_low"]
        <= rows["skip_rate"]["difference"]
        <= rows["skip_rate"]["ci_high"]
    )

    strict = run(skip_rate_max_rise=-1.0)  # "treatment must cut skips by 100 points": fails
    (check,) = strict.get_asset_check_evaluations()
    assert not check.passed
    assert "REGRESSED" in check.metadata["skip_rate"].value


def test_thompson_weights_explore_by_the_ensembles_spread_and_reruns_agree(replayed):
    lake, instance, _, defs = replayed
    day = "2026-01-26"
    scores = _read(lake, "quality_scores", day)
    sd = scores["quality_score_sd"].to_numpy()
    assert np.isfinite(sd).all() and (sd > 0).all()  # the production model is an ensemble

    def weights(policy: str) -> tuple[np.ndarray, dict]:
        result = defs.resolve_job_def("daily_chain").execute_in_process(
            instance=instance,
            partition_key=day,
            asset_selection=[dg.AssetKey("flywheel_sampling_weights")],
            run_config={"ops": {"flywheel_sampling_weights": {"config": {"policy": policy}}}},
        )
        (event,) = result.get_asset_materialization_events()
        metadata = event.materialization.metadata
        return _read(lake, "flywheel_sampling_weights", day)["sampling_weight"].to_numpy(), {
            k: v.value for k, v in metadata.items()
        }

    first, metadata = weights("thompson")
    assert metadata["policy"] == "thompson" and metadata["videos_with_fallback_sd"] == 0
    again, _ = weights("thompson")
    assert first.tolist() == again.tolist()  # seeded by the day
    plain, metadata = weights("exp")
    assert metadata["policy"] == "exp" and not np.allclose(first, plain)
    assert abs(first.sum() - 1) < 1e-9


def test_demo_report_says_what_the_prior_is_worth(replayed):
    lake, _, _, _ = replayed
    worth = prior_worth_of_lake(lake)  # scored days 01-18, 01-19 have labels
    assert worth is not None and worth.table.num_rows == len(PLAY_COUNTS)
    videos = worth.table["videos"].to_pylist()
    assert videos[0] > 0 and videos == sorted(videos, reverse=True)  # fewer reach more plays
    report = demo_report(lake, Path("."))
    assert worth.summary() in report and "related videos (CDML tower" in report
    assert "the modality study:" in report and "| image_only |" in report
