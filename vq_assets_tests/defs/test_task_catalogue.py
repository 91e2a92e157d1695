"""A task added to the catalogue alone is trained, evaluated, logged and scored end to end.

The toy task (7-day likes) is added to `tasks.CATALOGUE` and nowhere else; a small simulated
world is then replayed through the code location's own jobs.
"""

import datetime as dt

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from vq_assets.core.lake.store import Lake
from vq_assets.core.model import registry, tasks
from vq_assets.core.model.features import FULL_MODEL
from vq_assets.core.serving.flywheel import quality_score
from vq_assets.core.sources.simulator import simulate_local
from vq_assets.definitions import build_definitions
from vq_assets.partitions import START_DATE
from vq_assets.replay import Replay

TOY = tasks.Task(
    "likes_7d",
    label="likes",
    kind="log1p",
    stem="e_likes_7d",
    prediction="pred_likes_7d",
    unit="likes in 7 days",
    flywheel_weight=0.3,
)
WEEK = "2026-01-18"  # the first week with 10 complete label days


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    home = tmp_path_factory.mktemp("toy")
    root = home / "lake"
    simulate_local(root, dt.date.fromisoformat(START_DATE), 19, 30, seed=5)
    with pytest.MonkeyPatch.context() as env:
        env.setattr(tasks, "CATALOGUE", (*tasks.CATALOGUE, TOY))
        # MLflow exports the URI it last used; this test reads its own store.
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.setenv("VQ_LAKE", str(root))
        env.setenv("VQ_HOME", str(home))  # its own MLflow store
        defs = build_definitions()
        lake = Lake.local(root)
        replay = Replay(
            defs,
            dg.DagsterInstance.ephemeral(),
            lake,
            train_days=28,
            min_train_days=10,
            log=lambda _: None,
        )
        replay.run(START_DATE, "2026-01-19")
        yield lake, defs


def test_the_toy_task_gets_a_head_metrics_and_baselines(replayed):
    lake, defs = replayed
    record = registry.read_record(lake, WEEK)
    model = registry.load_version(lake, record.model_version)
    assert model.config.tasks[-1] == "likes_7d"
    evaluation = pq.read_table(lake.asset_file("model_evaluation", WEEK)).to_pylist()
    by = {(r["section"], r["variant"], r["slice"], r["metric"]): r["value"] for r in evaluation}
    for metric in ("MAE", "log1p_R2", "SpearmanCorr", "count", "loss"):
        assert ("model", FULL_MODEL, "all", f"val_e_likes_7d_{metric}") in by
    assert np.isfinite(by[("model", FULL_MODEL, "all", "val_e_likes_7d_loss")])
    assert ("baseline", "lightgbm", "all", "val_e_likes_7d_SpearmanCorr") in by
    assert ("model_vs_baseline", "lightgbm", "all", "val_e_likes_7d_SpearmanGap") in by
    assert ("best_achievable", "simulator_truth", "all", "e_likes_7d_SpearmanCorr") in by
    for arm in ("text_only", "image_only", "cover_only", "late_fusion", "text_regressor"):
        assert np.isfinite(by[("modality", arm, "all", "val_e_likes_7d_SpearmanGap_ci95_low")])
    client = MlflowClient(defs.resources["mlflow_tracking"].tracking_uri)
    logged = client.get_run(record.run_id).data.metrics
    assert np.isfinite(logged["val_e_likes_7d_SpearmanCorr"])


def test_the_toy_task_is_scored_and_weighs_in_the_quality_score(replayed):
    lake, _ = replayed
    for day in ("2026-01-18", "2026-01-19"):
        scores = pq.read_table(lake.asset_file("quality_scores", day))
        likes = scores["pred_likes_7d"].to_numpy()
        assert np.isfinite(likes).all() and (likes >= 0).all()
        preds = {t.prediction: scores[t.prediction].to_numpy() for t in tasks.catalogue()}
        preds["pred_likes_7d"] = likes
        with pytest.MonkeyPatch.context() as env:
            env.setattr(tasks, "CATALOGUE", (*tasks.CATALOGUE, TOY))
            np.testing.assert_allclose(scores["quality_score"].to_numpy(), quality_score(preds))
            without = quality_score(preds, {"likes_7d": 0.0})
        assert not np.allclose(scores["quality_score"].to_numpy(), without)
