"""The closed loop: the same world, with each new video's cold-start impressions placed by a
sampling policy, one arm per viewer (DESIGN §7).

In `simulate` a video's plays follow its exposure whatever any model says, so a flywheel can
only be judged offline. Here, on its creation day a video gets only cold-start impressions:
`LoopSettings.cold_start_plays` per new video on average, split between the arms by their share
of viewers and placed over the day's videos by each arm's policy (`Policy`: uniform, the lake's
`flywheel_sampling_weights`, or any weights table), each played by a viewer of that arm. From
the next day on, its organic plays (the same two-exponential kernel as `simulate`, shared by
both arms) are scaled by feedback from its cold start: exp(feedback × (the video's non-skip
share, shrunk to the day's mean, − the day's mean)); a video the policy showed more has a
surer, larger boost or penalty. So a policy changes plays, labels and creators' histories.

Viewers are split into arms by `experiment.assign_arm` (a stable hash of user_id). Each
landed day with a policy writes `<lake>/landing/experiment_arms/dt=D/` (user_id, arm), the
split `flywheel_experiment` reads; warm-up days (no policy) place cold starts uniformly and
write no arms. The organic plays see the cold-start outcomes of both arms: the experiment
measures the cold-start policy with the later exposure shared, not two separate platforms.

Days are landed one at a time (`land_videos`, then `land_events` once the day's weights
exist), in order; the feedback of each day is kept in `<lake>/truth/cold_start/dt=D/` so that
a new `ClosedLoop` on the same lake resumes where the last one stopped. The truth's expected
plays describe the open-loop exposure, not the loop's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vq_assets.core.lake.store import SUCCESS_MARKER, Lake
from vq_assets.core.serving.experiment import ARMS, ARMS_TABLE, assign_arm
from vq_assets.core.serving.flywheel import validate_policy_weights

from .tables import LoopPlays, events_table
from .world import (
    DAY_US,
    TAIL_DAYS,
    Creators,
    DayVideos,
    Viewers,
    day_start_us,
    make_day,
    stream_rng,
)
from .writer import SimulationSummary, day_tables

STREAM_COLD = 5  # the streams of world.py are 0..4
FEEDBACK_SHRINK = 5.0  # pseudo-plays at the day's mean non-skip share

# A policy: (day, the day's video ids) -> one weight per video, summing to 1.
Policy = Callable[[str, list[str]], np.ndarray]


def uniform_policy(day: str, video_ids: list[str]) -> np.ndarray:
    """Every new video of the day alike: the cold start without a model."""
    return np.full(len(video_ids), 1.0 / len(video_ids))


def weights_policy(lake: Lake, *parts: str, column: str = "sampling_weight") -> Policy:
    """The policy a lake folder of daily weights gives, `dt=D/*.parquet` of (video_id,
    `column`): by default `assets/flywheel_sampling_weights`, vq's own weights. Checked with
    `flywheel.validate_policy_weights` (a distribution over the day's videos, or an error that
    says why); the day's videos a table leaves out get no cold start."""
    parts = parts or ("assets", "flywheel_sampling_weights")

    def policy(day: str, video_ids: list[str]) -> np.ndarray:
        folder = lake.path(*parts, f"dt={day}")
        files = lake.list_files(folder)
        if not files:
            raise FileNotFoundError(f"no policy weights for {day}: {lake.uri(folder)} is empty")
        table = pa.concat_tables(lake.read_table(f) for f in files)
        if not {"video_id", column} <= set(table.column_names):
            raise ValueError(f"{lake.uri(folder)}: needs columns video_id and {column}")
        ids = table["video_id"].to_pylist()
        w = validate_policy_weights(ids, table[column].to_numpy(), video_ids)
        index = {v: i for i, v in enumerate(video_ids)}
        out = np.zeros(len(video_ids))
        out[[index[v] for v in ids]] = w
        return out

    return policy


@dataclass(frozen=True)
class LoopSettings:
    cold_start_plays: float = 12.0  # mean cold-start impressions per new video
    treatment_share: float = 0.5  # of viewers
    salt: str = "vq-flywheel"  # of the arm hash; another salt, another split
    feedback: float = 3.0  # organic exposure x exp(feedback x non-skip share gap)

    def __post_init__(self) -> None:
        if self.cold_start_plays <= 0 or self.feedback < 0:
            raise ValueError("cold_start_plays must be > 0 and feedback >= 0")
        if not 0.0 < self.treatment_share < 1.0:
            raise ValueError(f"treatment_share must be in (0, 1), got {self.treatment_share}")


class ClosedLoop:
    """A world from `origin` whose days are landed in order, each day's cold starts placed by
    the policies given for it."""

    def __init__(
        self,
        lake: Lake,
        origin: dt.date,
        videos_per_day: int,
        seed: int = 0,
        *,
        mean_plays: float = 60.0,
        media: bool = True,
        settings: LoopSettings | None = None,
    ) -> None:
        if seed < 0 or videos_per_day < 1 or mean_plays <= 0:
            raise ValueError("need seed >= 0, videos_per_day >= 1 and mean_plays > 0")
        self.lake, self.origin, self.seed = lake, origin, seed
        self.videos_per_day, self.mean_plays, self.media = videos_per_day, mean_plays, media
        self.settings = settings or LoopSettings()
        self.viewers = Viewers.make(seed, max(1_000, videos_per_day * 40))
        self.user_ids = [f"u{i}" for i in range(self.viewers.n)]
        arm = assign_arm(self.user_ids, self.settings.treatment_share, self.settings.salt)
        self.members = {a: np.flatnonzero(arm == a) for a in ARMS}
        self._creators = Creators(seed)
        self._days: dict[int, DayVideos] = {}
        self._boost: dict[int, np.ndarray] = {}

    def _index(self, date: dt.date) -> int:
        i = (date - self.origin).days
        if i < 0:
            raise ValueError(f"{date} precedes the world's origin {self.origin}")
        return i

    def _day(self, i: int) -> DayVideos:
        if i not in self._days:
            self._days[i] = make_day(
                self._creators, self.seed, self.origin, i, self.videos_per_day, self.mean_plays
            )
            for old in [d for d in self._days if d < i - TAIL_DAYS]:
                del self._days[old]
        return self._days[i]

    def land_videos(self, date: dt.date) -> SimulationSummary:
        """Land the day's videos (and media), with their truth."""
        i, iso = self._index(date), date.isoformat()
        v = self._day(i)
        summary = SimulationSummary(days=1, videos=len(v), events=0)
        lake = self.lake
        if lake.day_complete("videos", iso):
            lake.fs.delete_file(f"{lake.landing_dir('videos', iso)}/{SUCCESS_MARKER}")
        videos, truth = day_tables(lake, v, self._creators, self.seed, i, self.media, summary)
        lake.write_table(lake.path("truth", "videos", f"dt={iso}"), truth)
        lake.write_table(lake.landing_dir("videos", iso), videos)
        lake.write_marker(lake.landing_dir("videos", iso))
        return summary

    def land_events(
        self, date: dt.date, policies: Mapping[str, Policy] | None = None
    ) -> SimulationSummary:
        """Land the day's plays: the organic plays of the earlier days' videos and the cold
        starts of the day's, placed per arm by `policies` ({arm: policy} for both arms), or
        uniformly without an experiment (no arms written) when `policies` is None."""
        i, iso = self._index(date), date.isoformat()
        lake = self.lake
        if policies is not None and set(policies) != set(ARMS):
            raise ValueError(f"policies must name the arms {list(ARMS)}, got {sorted(policies)}")
        for table in ("watch_events", ARMS_TABLE):
            if lake.day_complete(table, iso):
                lake.fs.delete_file(f"{lake.landing_dir(table, iso)}/{SUCCESS_MARKER}")
        days = list(range(max(0, i - TAIL_DAYS), i + 1))
        window = [self._day(d) for d in days]
        today = window[-1]
        ids = today.video_id.to_pylist()
        start = day_start_us(date)
        organic_start = np.concatenate(
            [
                np.full(len(v), day_start_us(self.origin + dt.timedelta(days=d + 1)))
                for d, v in zip(days, window, strict=True)
            ]
        )
        exposure = np.concatenate(
            [
                v.exposure * (self._boosts(d) if d < i else 1.0)
                for d, v in zip(days, window, strict=True)
            ]
        )
        offset = len(organic_start) - len(today)
        cold = self._cold_starts(i, iso, ids, today.created_us, start, policies)
        loop = LoopPlays(organic_start, exposure, cold[0] + offset, cold[1], cold[2])
        events = events_table(window, self.seed, i, start, self.viewers, loop)
        lake.write_table(lake.landing_dir("watch_events", iso), events)
        if policies is not None:
            arm = np.empty(self.viewers.n, dtype=object)
            for a, who in self.members.items():
                arm[who] = a
            arms = pa.table({"user_id": self.user_ids, "arm": pa.array(arm, pa.string())})
            lake.write_table(lake.landing_dir(ARMS_TABLE, iso), arms)
            lake.write_marker(lake.landing_dir(ARMS_TABLE, iso))
        self._keep_feedback(i, iso, today, events)
        lake.write_marker(lake.landing_dir("watch_events", iso))
        return SimulationSummary(days=1, videos=0, events=events.num_rows)

    def _cold_starts(
        self,
        i: int,
        iso: str,
        ids: list[str],
        created: np.ndarray,
        day_start: int,
        policies: Mapping[str, Policy] | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(video row in the day, time, viewer) of each cold-start play of the day's videos."""
        rng = stream_rng(self.seed, STREAM_COLD, i)
        n = len(ids)
        video, ts, user = [], [], []
        for a in ARMS:
            members = self.members[a]
            w = uniform_policy(iso, ids) if policies is None else policies[a](iso, ids)
            budget = round(self.settings.cold_start_plays * n * len(members) / self.viewers.n)
            counts = rng.multinomial(budget, w / w.sum())
            rows = np.repeat(np.arange(n), counts)
            # Any time between the video's creation and the end of its day; heavy viewers (the
            # low numbers) see more, as in the organic exploration plays.
            span = day_start + DAY_US - created[rows]
            video.append(rows)
            ts.append(created[rows] + np.floor(rng.random(rows.size) * span).astype(np.int64))
            user.append(
                members[np.floor(len(members) * rng.random(rows.size) ** 2).astype(np.int64)]
            )
        return np.concatenate(video), np.concatenate(ts), np.concatenate(user)

    def _keep_feedback(self, i: int, iso: str, today: DayVideos, events: pa.Table) -> None:
        """The day's videos' cold-start outcome and the organic boost it earns, kept in memory
        and in the truth."""
        n = len(today)
        row = pc.index_in(events["video_id"], value_set=today.video_id)
        row = pc.fill_null(row, -1).to_numpy(zero_copy_only=False)
        mine = row >= 0
        skip = events["watch_time_s"].to_numpy()[mine] < 3.0
        plays = np.bincount(row[mine], minlength=n).astype(float)
        kept = plays - np.bincount(row[mine], weights=skip, minlength=n)
        mean = kept.sum() / max(plays.sum(), 1.0)
        share = (kept + FEEDBACK_SHRINK * mean) / (plays + FEEDBACK_SHRINK)
        boost = np.exp(self.settings.feedback * (share - mean))
        self._boost[i] = boost
        table = pa.table(
            {
                "video_id": today.video_id,
                "cold_start_plays": plays.astype(np.int64),
                "cold_start_skips": (plays - kept).astype(np.int64),
                "organic_boost": boost,
            }
        )
        self.lake.write_table(self.lake.path("truth", "cold_start", f"dt={iso}"), table)

    def _boosts(self, d: int) -> np.ndarray:
        """The organic boosts of day `d`'s videos, from memory or the truth a previous run
        wrote; a day landed without the loop (no cold-start truth) keeps its exposure."""
        if d not in self._boost:
            iso = (self.origin + dt.timedelta(days=d)).isoformat()
            files = self.lake.list_files(self.lake.path("truth", "cold_start", f"dt={iso}"))
            if not files:
                return np.ones(len(self._day(d)))
            table = self.lake.read_table(files[0])
            self._boost[d] = table["organic_boost"].to_numpy()
        return self._boost[d]
