"""A platform that keeps only daily counters: a lake with videos and plays-only
`video_daily_stats`, and no `watch_events` landing at all, runs the whole chain through Dagster
the way the daemon runs it (sensor ticks, the retraining schedule's request), without an error.

The event assets are left out of what the sensor requests, skip with a word when a job runs them
anyway, and the labels come from the daily stats: plays, day-0 plays and virality, with every
counter the platform does not keep null, never 0.
"""

import datetime as dt
import json
import logging
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from dagster_aws.s3 import S3Resource
from mlflow.tracking import MlflowClient

from vq_assets.core.labels.windows import LABEL_COLUMNS
from vq_assets.core.lake.store import Lake
from vq_assets.core.model import registry
from vq_assets.core.model.registry import default_tracking_uri
from vq_assets.core.sources.simulator import simulate_local
from vq_assets.definitions import build_definitions
from vq_assets.defs.automation import EVENT_ASSETS, FEATURE_ASSETS, landing_sensor
from vq_assets.partitions import START_DATE
from vq_assets.resources import LakeResource

START = dt.date.fromisoformat(START_DATE)
WEEK = "2026-01-11"  # the first Sunday with 3 closed label days (01-01..01-03) before it
VIDEOS_PER_DAY = 16
# Small enough for a test; what the model learns here does not matter, only that it runs.
TINY_MODEL = {"members": 1, "max_epochs": 2, "width": 8, "mlp": [16], "batch_size": 32}
NOT_KEPT = ("skips", "full_watches", "likes", "comments", "shares")


def _simulate(root: Path, first: int, days: int) -> None:
    simulate_local(
        root,
        START + dt.timedelta(days=first),
        days,
        VIDEOS_PER_DAY,
        seed=2,
        media=False,
        origin=START,
        counters=("plays",),
    )


class Daemon:
    """Ticks the landing sensor and launches what it asks for, as the Dagster daemon would."""

    def __init__(self, root: Path, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.root, self.defs, self.instance = root, defs, instance
        self.cursor: str | None = None
        self.requests: list[dg.RunRequest] = []

    def tick(self) -> list[dg.RunRequest]:
        lake = LakeResource(root=str(self.root), s3=S3Resource())
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            repository_def=self.defs.get_repository_def(),
            resources={"lake": lake},
        ) as context:
            data = landing_sensor.evaluate_tick(context)
        self.cursor = data.cursor
        self.requests += data.run_requests
        for request in data.run_requests:
            self.launch(request.job_name, request.partition_key, request.asset_selection)
        return list(data.run_requests)

    def launch(
        self,
        job: str,
        partition: str,
        selection: list[dg.AssetKey] | None = None,
        run_config: dict | None = None,
    ) -> dg.ExecuteInProcessResult:
        result = self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance,
            partition_key=partition,
            asset_selection=selection,
            run_config=run_config,
            raise_on_error=False,
        )
        failures = [
            f"{e.step_key}: {e.event_specific_data.error.message.strip()}"
            for e in result.all_events
            if e.event_type_value == "STEP_FAILURE"
        ]
        assert result.success, f"{job}[{partition}] failed:\n" + "\n".join(failures)
        return result


def _names(request: dg.RunRequest) -> set[str]:
    return {k.to_user_string() for k in request.asset_selection}


@pytest.fixture(scope="module")
def counters_only(tmp_path_factory):
    home = tmp_path_factory.mktemp("counters")
    root = home / "lake"
    with pytest.MonkeyPatch.context() as env:
        # An MLflow store of its own: the session's store keeps other tests' model versions.
        env.setenv("MLFLOW_TRACKING_URI", default_tracking_uri(str(home)))
        env.setenv("VQ_MLFLOW_ARTIFACTS", str(home / "mlflow" / "artifacts"))
        env.setenv("VQ_LAKE", str(root))  # the lake resource reads it at each run
        defs = build_definitions()
        instance = dg.DagsterInstance.ephemeral()
        daemon = Daemon(root, defs, instance)
        # Days land one by one, and the sensor ticks after each: 01-01..01-10.
        before_model = []
        for i in range(10):
            _simulate(root, i, 1)
            before_model += daemon.tick()
        # The weekly schedule's request for WEEK, launched with a tiny model.
        (retrain,) = (
            defs.resolve_schedule_def("retrain_schedule")
            .evaluate_tick(
                dg.build_schedule_context(
                    instance=instance,
                    scheduled_execution_time=dt.datetime(2026, 1, 11, 3, tzinfo=dt.UTC),
                    repository_def=defs.get_repository_def(),
                )
            )
            .run_requests
        )
        ops = {name: {"config": TINY_MODEL} for name in ("quality_model", "model_evaluation")}
        daemon.launch("retrain", retrain.partition_key, run_config={"ops": ops})
        after_model = []
        for i in range(10, 18):  # 01-11..01-18
            _simulate(root, i, 1)
            after_model += daemon.tick()
        yield {
            "lake": Lake.local(root),
            "home": home,
            "instance": instance,
            "defs": defs,
            "daemon": daemon,
            "before_model": before_model,
            "after_model": after_model,
        }


def test_the_sensor_leaves_the_event_assets_out(counters_only):
    before = counters_only["before_model"]
    chain = [r for r in before if r.job_name == "daily_chain"]
    assert [r.partition_key for r in chain] == [
        (START + dt.timedelta(days=i)).isoformat() for i in range(10)
    ]
    want = set(FEATURE_ASSETS) - set(EVENT_ASSETS)
    assert all(_names(r) == want for r in chain)
    # The labels of 01-01..01-04, each once its calendar days D..D+6 have all landed.
    labels = [(r.partition_key, _names(r)) for r in before if r.job_name == "labels"]
    assert labels == [(f"2026-01-0{d}", {"video_labels_7d"}) for d in range(1, 5)]
    lake, instance = counters_only["lake"], counters_only["instance"]
    assert not lake.exists(lake.path("landing", "watch_events"))
    for asset in EVENT_ASSETS:
        assert not instance.get_materialized_partitions(dg.AssetKey(asset))
    cursor = json.loads(counters_only["daemon"].cursor)
    assert cursor["labels"][-1] == "2026-01-12"


def test_labels_from_plays_only_rollups(counters_only):
    lake = counters_only["lake"]
    labels = lake.read_table(lake.asset_file("video_labels_7d", "2026-01-02"))
    assert labels.num_rows == VIDEOS_PER_DAY
    assert labels["plays"].null_count == 0 and np.sum(labels["plays"].to_numpy()) > 0
    for name in (*NOT_KEPT, "avg_watch_time_s", "skip_rate", "engagement_rate"):
        assert labels[name].null_count == labels.num_rows, name  # not kept: null, never 0
    day0, plays = labels["day0_plays"].to_numpy(), labels["plays"].to_numpy()
    assert (day0 <= plays).all() and day0.sum() > 0
    followers = labels["followers"].to_numpy(zero_copy_only=False).astype(float)
    virality = labels["virality"].to_numpy(zero_copy_only=False).astype(float)
    known = followers > 0
    assert known.any() and np.allclose(virality[known], (day0 + plays)[known] / followers[known])
    assert np.isnan(virality[~known]).all()
    event = counters_only["instance"].get_latest_materialization_event(
        dg.AssetKey("video_labels_7d")
    )
    meta = event.asset_materialization.metadata
    assert "no watch_events" in meta["label_source"].value
    assert set(meta["null_labels"].value) == set(NOT_KEPT) | {
        "avg_watch_time_s",
        "skip_rate",
        "engagement_rate",
        "virality",
    }
    assert set(meta["null_labels"].value) < set(LABEL_COLUMNS)


def test_a_model_trains_scores_and_weights_the_later_days(counters_only):
    lake = counters_only["lake"]
    record = lake.read_table(lake.asset_file("quality_model", WEEK)).to_pylist()[0]
    assert record["promoted"]
    versions = MlflowClient(default_tracking_uri(str(counters_only["home"]))).search_model_versions(
        f"name='{registry.MODEL_NAME}'"
    )
    assert [int(v.version) for v in versions] == [1]  # in this test's own store
    assert lake.list_days(lake.asset_dir("model_evaluation")) == [WEEK]
    after = counters_only["after_model"]
    chain = {r.partition_key: _names(r) for r in after if r.job_name == "daily_chain"}
    assert sorted(chain) == [f"2026-01-{d}" for d in range(11, 19)]
    assert all({"quality_scores", "flywheel_sampling_weights"} <= s for s in chain.values())
    assert not any(set(EVENT_ASSETS) & s for s in chain.values())
    for day in sorted(chain):
        weights = lake.read_table(lake.asset_file("flywheel_sampling_weights", day))
        assert weights.num_rows == VIDEOS_PER_DAY
        assert abs(np.sum(weights["sampling_weight"].to_numpy()) - 1) < 1e-9


def test_labels_of_scored_days_bring_the_lift_without_skip_rates(counters_only):
    after = counters_only["after_model"]
    requested = {r.partition_key: _names(r) for r in after if r.job_name == "labels"}
    assert requested == {
        **{f"2026-01-{d:02d}": {"video_labels_7d"} for d in range(5, 11)},
        "2026-01-11": {"video_labels_7d", "flywheel_lift"},
        "2026-01-12": {"video_labels_7d", "flywheel_lift"},
    }
    lake = counters_only["lake"]
    lift = lake.read_table(lake.asset_file("flywheel_lift", "2026-01-11")).to_pylist()[0]
    # No skip rate is kept: the lift cannot be measured, and says so rather than crash.
    assert lift["videos_with_labels"] == 0


def test_a_job_that_runs_the_event_assets_anyway_skips_them_with_a_word(counters_only):
    # The daily schedule and the UI run the whole job selection, event assets included.
    daemon, day = counters_only["daemon"], "2026-01-05"
    selection = [dg.AssetKey(a) for a in ("raw_videos", *EVENT_ASSETS)]
    result = daemon.launch("daily_chain", day, selection)
    skipped = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
    assert skipped == {"video_watch_daily", "cowatch_pairs"}  # nothing upstream to read
    evaluations = result.get_asset_check_evaluations()
    (check,) = [c for c in evaluations if c.asset_key == dg.AssetKey("watch_events")]
    assert check.passed and "no watch_events landing" in check.metadata["skipped"].value
    warnings = [
        e.user_message
        for e in daemon.instance.all_logs(result.run_id)
        if e.level >= logging.WARNING and e.user_message
    ]
    assert any("skipped: the lake has no watch_events landing" in w for w in warnings)
    assert not result.asset_materializations_for_node("watch_events")
    # video_watch_daily alone: it skips too, naming why, instead of failing on a missing input.
    alone = daemon.launch("daily_chain", day, [dg.AssetKey("video_watch_daily")])
    assert not alone.asset_materializations_for_node("video_watch_daily")
    messages = [e.user_message for e in daemon.instance.all_logs(alone.run_id)]
    assert any("labels come from video_daily_stats" in (m or "") for m in messages)
    alone = daemon.launch("daily_chain", day, [dg.AssetKey("cowatch_pairs")])
    assert not alone.asset_materializations_for_node("cowatch_pairs")
    messages = [e.user_message for e in daemon.instance.all_logs(alone.run_id)]
    assert any("there is no co-watch" in (m or "") for m in messages)
