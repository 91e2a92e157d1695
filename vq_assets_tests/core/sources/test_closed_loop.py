"""The closed-loop simulator: cold starts placed per arm by a policy, shared organic plays with
feedback, the arm split in the lake, resumable day by day."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy.stats import spearmanr

from vq_assets.core.lake.store import Lake
from vq_assets.core.serving.experiment import assign_arm
from vq_assets.core.sources.simulator import simulate_local
from vq_assets.core.sources.simulator.closed_loop import (
    ClosedLoop,
    LoopSettings,
    uniform_policy,
    weights_policy,
)

START = dt.date(2026, 1, 1)
N = 120


def _read(lake: Lake, *parts: str) -> pa.Table:
    return pa.concat_tables(lake.read_table(f) for f in lake.list_files(lake.path(*parts)))


def _landed(world: ClosedLoop, days: int, policies=None, ab_from: int = 10**9) -> None:
    for k in range(days):
        d = START + dt.timedelta(days=k)
        world.land_videos(d)
        world.land_events(d, policies if k >= ab_from else None)


def _creation_day_plays(lake: Lake, day: str) -> tuple[pa.Table, pa.Table]:
    videos = _read(lake, "landing", "videos", f"dt={day}")
    events = _read(lake, "landing", "watch_events", f"dt={day}")
    mine = pc.is_in(events["video_id"], value_set=videos["video_id"])
    return videos, events.filter(mine)


def test_cold_starts_follow_each_arms_policy_and_the_split_is_landed(tmp_path):
    lake = Lake.local(tmp_path)
    world = ClosedLoop(lake, START, N, seed=1, media=False)
    chosen: list[str] = []

    def top10(day: str, ids: list[str]) -> np.ndarray:
        w = np.zeros(len(ids))
        w[:10] = 0.1
        chosen[:] = ids[:10]
        return w

    _landed(world, 3, {"control": uniform_policy, "treatment": top10}, ab_from=2)
    # warm-up days: no arms; the A/B day: every viewer's arm, the stable hash of their id
    assert not lake.list_files(lake.landing_dir("experiment_arms", "2026-01-02"))
    arms = _read(lake, "landing", "experiment_arms", "dt=2026-01-03")
    expected = assign_arm(arms["user_id"].to_pylist(), 0.5, "vq-flywheel")
    assert arms["arm"].to_pylist() == expected.tolist()
    arm_of = dict(zip(arms["user_id"].to_pylist(), arms["arm"].to_pylist(), strict=True))

    videos, plays = _creation_day_plays(lake, "2026-01-03")
    treated = np.array([arm_of[u] == "treatment" for u in plays["user_id"].to_pylist()])
    ids = np.array(plays["video_id"].to_pylist())
    # a new video's creation-day plays are its cold starts: treatment's only on its 10
    assert set(ids[treated]) == set(chosen)
    assert len(set(ids[~treated])) > 0.8 * N  # control's spread over nearly all
    # the budget: cold_start_plays per new video, split by the arms' shares of viewers
    assert abs(len(ids) / N - 12.0) < 0.5
    assert abs(treated.mean() - (np.array(list(arm_of.values())) == "treatment").mean()) < 0.03
    # cold starts are exploration plays: taken after creation, on the creation day
    created = dict(
        zip(videos["video_id"].to_pylist(), videos["created_at"].to_pylist(), strict=True)
    )
    assert all(ts >= created[v] for v, ts in zip(ids, plays["event_ts"].to_pylist(), strict=True))


def test_the_world_is_the_open_loop_world_and_feedback_moves_organic_plays(tmp_path):
    lake = Lake.local(tmp_path / "loop")
    world = ClosedLoop(lake, START, N, seed=2, media=False)
    _landed(world, 3)
    simulate_local(tmp_path / "open", START, 1, N, seed=2, media=False)
    loop_videos = _read(lake, "landing", "videos", "dt=2026-01-01")
    open_videos = _read(Lake.local(tmp_path / "open"), "landing", "videos", "dt=2026-01-01")
    assert loop_videos.equals(open_videos)  # same videos: only who sees them changes

    feedback = _read(lake, "truth", "cold_start", "dt=2026-01-01")
    share = (feedback["cold_start_plays"].to_numpy() - feedback["cold_start_skips"].to_numpy()) / (
        np.maximum(feedback["cold_start_plays"].to_numpy(), 1)
    )
    boost = feedback["organic_boost"].to_numpy()
    assert spearmanr(share, boost)[0] > 0.8
    # day 1's videos' organic plays on day 2 follow their boost (exposure luck aside)
    events = _read(lake, "landing", "watch_events", "dt=2026-01-02")
    counts = pc.value_counts(events["video_id"]).to_pylist()
    by_id = {c["values"]: c["counts"] for c in counts}
    organic = np.array([by_id.get(v, 0) for v in feedback["video_id"].to_pylist()])
    assert spearmanr(boost, organic)[0] > 0.15


def test_a_resumed_world_lands_what_an_uninterrupted_one_does(tmp_path):
    whole = Lake.local(tmp_path / "whole")
    _landed(ClosedLoop(whole, START, N, seed=3, media=False), 4)
    part = Lake.local(tmp_path / "part")
    _landed(ClosedLoop(part, START, N, seed=3, media=False), 2)
    later = ClosedLoop(part, START, N, seed=3, media=False)  # a new process, same lake
    for k in (2, 3):
        later.land_videos(START + dt.timedelta(days=k))
        later.land_events(START + dt.timedelta(days=k))
    for day in ("2026-01-03", "2026-01-04"):
        a = _read(whole, "landing", "watch_events", f"dt={day}")
        b = _read(part, "landing", "watch_events", f"dt={day}")
        assert a.equals(b)


def test_a_policy_that_is_no_distribution_is_refused_with_the_reason(tmp_path):
    lake = Lake.local(tmp_path)
    world = ClosedLoop(lake, START, N, seed=4, media=False)
    world.land_videos(START)
    ids = _read(lake, "landing", "videos", "dt=2026-01-01")["video_id"].to_pylist()
    folder = lake.path("policies", "mine", "dt=2026-01-01")
    lake.write_table(folder, pa.table({"video_id": ids, "sampling_weight": [0.9 / N] * N}))
    policies = {"control": uniform_policy, "treatment": weights_policy(lake, "policies", "mine")}
    with pytest.raises(ValueError, match="weights sum to 0.9"):
        world.land_events(START, policies)
    assert not lake.day_complete("watch_events", "2026-01-01")  # nothing half-landed
    with pytest.raises(ValueError, match="treatment_share"):
        LoopSettings(treatment_share=1.0)
