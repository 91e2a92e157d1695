"""A seeded, deterministic short-video platform that writes the lake's landing zone (DESIGN §3).

The world: creators with a latent talent, a home language, favourite topics, a production-quality
level and a follower count; videos whose latent *appeal* is a topic effect + creator talent +
production quality + a duration effect + a caption "hook" + noise; and watch events whose skip,
watch-fraction, full-watch and engagement rates are driven by appeal and duration. Most of the
appeal is visible at creation time (topic and quality in the pixels, topic/hook/language in the
caption, talent through the creator's history and followers) but not all of it.

Randomness is split into independent streams keyed by `(seed, stream, index)`:
creators by block of creator index, videos / media / events by day index counted from `origin`.
A day therefore never depends on how many days are simulated, and any day can be re-created
alone: `simulate(days=10)` writes the same first five days as `simulate(days=5)`, and
`simulate(start=origin + 5 days, origin=origin, days=5)` writes the last five.

Viewers have tastes: each speaks one language and likes one or two topics. 70% of plays are
taste-led: they come in sessions (about 8 plays of one topic and language, close in time) each
watched by one viewer who likes that topic and speaks that language, and are skipped less (a
logit 0.8 lower than the rest); the other plays are exploration, by any viewer. So viewers who
watch two videos in one sitting tell that they share a topic and a language: the co-watch signal
`cowatch_pairs` and CDML learn from. Each video's topic is in `<root>/truth/`.

Event day E holds the plays, that day, of every video created in the previous `TAIL_DAYS` days:
each video has an expected lifetime play count (its exposure) spread over time by a decaying
two-exponential kernel, so only one day of events is ever in memory.

`simulate(..., counters=("plays", ...))` lands the same plays as `video_daily_stats` rollups with
only those counters, and no `watch_events`: a platform that keeps only daily counters.

`<root>/truth/` keeps each video's latent appeal and expected rates; the pipeline never reads it,
evaluation uses it to know the best achievable score.

`closed_loop.ClosedLoop` runs the same world with the flywheel in the loop: each new video's
cold-start impressions are placed by a sampling policy per arm of viewers (uniform, the lake's
`flywheel_sampling_weights`, or a weights table), and its later plays get feedback from them.

Modules: `world` (creators, videos, captions, exposure), `tables` (the landing and truth rows,
watch events), `render` (frames, mp4, covers), `writer` (`simulate`, into a `Lake`) and
`closed_loop` (day by day, policies in the loop).
"""

from vq_assets.core.lake.contract import VIDEOS_SCHEMA, WATCH_EVENTS_SCHEMA

from .render import encode_mp4, render_frames
from .tables import DAILY_STATS_COUNTERS, TRUTH_SCHEMA, expected_labels
from .world import LANGUAGES, TOPICS
from .writer import SimulationSummary, simulate, simulate_local

__all__ = [
    "DAILY_STATS_COUNTERS",
    "LANGUAGES",
    "TOPICS",
    "TRUTH_SCHEMA",
    "VIDEOS_SCHEMA",
    "WATCH_EVENTS_SCHEMA",
    "SimulationSummary",
    "encode_mp4",
    "expected_labels",
    "render_frames",
    "simulate",
    "simulate_local",
]
