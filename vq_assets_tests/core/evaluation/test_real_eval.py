"""The KuaiRand-Pure evaluation: author split, point-in-time creator prior, the report."""

import csv
import dataclasses
import datetime as dt
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from vq_assets import real_report
from vq_assets.core.evaluation import real_data as real_eval
from vq_assets.core.lake.store import Lake
from vq_assets.core.model import tasks
from vq_assets.core.sources import kuairand as kr

SRC = Path(
    os.environ.get(
        "VQ_KUAIRAND_DIR", Path(__file__).resolve().parents[4] / "shared/data/kuairand_pure"
    )
)
needs_data = pytest.mark.skipif(
    not SRC.is_dir(), reason=f"KuaiRand-Pure not found at {SRC} (set VQ_KUAIRAND_DIR)"
)

N_HEAD = 300  # the first CSV rows
N_MULTI_DAY_AUTHORS = 120  # plus every video of these authors, so that priors exist


def make_slice(dst: Path) -> None:
    """The first N_HEAD rows of the CSV plus all rows of the first N_MULTI_DAY_AUTHORS authors
    (by id) with uploads on more than one day; their events and statistics."""
    dst.mkdir()
    with open(SRC / kr.VIDEOS_CSV, encoding="utf-8") as f:
        lines = f.readlines()
    rows = list(csv.DictReader(lines))
    days = defaultdict(set)
    for r in rows:
        days[r["author_id"]].add(r["upload_dt"])
    multi_day = sorted((a for a, d in days.items() if len(d) > 1), key=int)[:N_MULTI_DAY_AUTHORS]
    wanted = set(multi_day)
    keep = [i for i, r in enumerate(rows) if i < N_HEAD or r["author_id"] in wanted]
    (dst / kr.VIDEOS_CSV).write_text(lines[0] + "".join(lines[i + 1] for i in keep), "utf-8")
    ids = pa.array([int(rows[i]["video_id"]) for i in keep])
    for path in sorted(SRC.glob(kr.EVENTS_GLOB)):
        t = pq.read_table(path)
        pq.write_table(t.filter(pc.is_in(t.column("video_id"), ids)), dst / path.name)
    stats = pq.read_table(SRC / kr.STATS_PARQUET)
    pq.write_table(stats.filter(pc.is_in(stats.column("video_id"), ids)), dst / kr.STATS_PARQUET)


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    root = tmp_path_factory.mktemp("kuairand_eval")
    make_slice(root / "src")
    lake = Lake.local(root / "lake")
    kr.import_kuairand(root / "src", lake)
    return lake


@needs_data
def test_author_split_is_disjoint_and_seeded(lake):
    creators = real_eval.load_rows(lake).column("creator_id").to_pylist()
    for seed in (0, 1):
        split = real_eval.author_split(creators, seed)
        authors = {
            s: {c for c, x in zip(creators, split, strict=True) if x == s}
            for s in ("train", "validation", "test")
        }
        assert all(authors.values())
        assert not authors["train"] & authors["validation"]
        assert not authors["train"] & authors["test"]
        assert not authors["validation"] & authors["test"]
        # Depends on the author and the seed only, not on the row order.
        assert (real_eval.author_split(creators[::-1], seed)[::-1] == split).all()
    assert (real_eval.author_split(creators, 0) != real_eval.author_split(creators, 1)).any()


def _rows(videos: list[tuple[str, str, dt.datetime, float]]) -> pa.Table:
    """(video_id, creator_id, created_at, value): every label with a prior set to value."""
    return pa.table(
        {
            "video_id": [v[0] for v in videos],
            "creator_id": [v[1] for v in videos],
            "created_at": pa.array([v[2] for v in videos], pa.timestamp("us", tz="UTC")),
            **{t: [v[3] for v in videos] for t in real_eval.prior_columns()},
        }
    )


def test_prior_mean_uses_only_earlier_days():
    day = [dt.datetime(2022, 4, d, tzinfo=dt.UTC) for d in (9, 10, 11)]
    rows = _rows(
        [
            ("a1", "a", day[0], 10.0),
            ("a2", "a", day[1], 20.0),
            # Later on the same day as a2: a2 must not count, though it is strictly earlier.
            ("a3", "a", day[1] + dt.timedelta(hours=15), 40.0),
            ("a4", "a", day[2], 80.0),
            ("b1", "b", day[0], 1000.0),  # another author, earlier: never counts for a
            ("b2", "b", day[2], 2000.0),
        ]
    )
    prior = {r["video_id"]: r for r in real_eval.creator_prior(rows).to_pylist()}
    want = {
        "a1": (0, None),
        "a2": (1, 10.0),
        "a3": (1, 10.0),
        "a4": (3, 70 / 3),
        "b1": (0, None),
        "b2": (1, 1000.0),
    }
    for video, (n, mean) in want.items():
        assert prior[video]["prior_videos"] == n
        for t in real_eval.prior_columns():
            got = prior[video][f"prior_mean_{t}"]
            if mean is None:
                assert got is None
            else:
                assert got == pytest.approx(mean)


@needs_data
def test_prior_on_the_slice_matches_plain_python(lake):
    rows = real_eval.load_rows(lake).to_pylist()
    assert sum(r["prior_videos"] > 0 for r in rows) > 10  # the slice does exercise priors
    for r in rows:
        earlier = [
            h
            for h in rows
            if h["creator_id"] == r["creator_id"]
            and h["created_at"].date() < r["created_at"].date()
        ]
        assert r["prior_videos"] == len(earlier)
        for t in real_eval.prior_columns():
            known = [h[t] for h in earlier if h[t] is not None]  # virality: no day 0 here
            if known:
                assert r[f"prior_mean_{t}"] == pytest.approx(np.mean(known))
            else:
                assert r[f"prior_mean_{t}"] is None


@needs_data
def test_evaluate_real_gives_finite_metrics_per_task(lake):
    report = real_eval.evaluate_real(lake, seed=0, max_epochs=3, patience=2, gbdt_rounds=50)
    assert sum(report.split_videos.values()) == report.videos
    assert 0 < report.test_with_prior <= report.split_videos["test"]
    # A month's totals have no day 0: virality is left out, with its reason; all else is there.
    assert list(report.tasks_left_out) == ["virality"]
    assert report.tasks() == [t for t in tasks.names() if t != "virality"]
    for t in report.tasks():
        for method in ("vq_model", "lightgbm"):
            assert math.isfinite(report.value(method, t, "SpearmanCorr")), (method, t)
        for method in real_eval.METHODS:
            if tasks.task(t).kind != "ordinal":
                assert math.isfinite(report.value(method, t, "MAE")), (method, t)
        assert math.isnan(report.value("global_mean", t, "SpearmanCorr"))  # constant
        low, high = report.gaps[t]["lightgbm"][1:]
        assert low <= report.gaps[t]["lightgbm"][0] <= high
    for method in ("vq_model", "lightgbm", "creator_prior_mean"):
        for metric in ("accuracy", "within_one_accuracy", "macro_F1", "QWK"):
            assert math.isfinite(report.value(method, "popularity", metric)), (method, metric)
    text = real_report.results_section([report], "vq evaluate-real --kuairand DIR --write-results")
    assert text.startswith(real_report.SECTION + "\n") and "| vq_model |" in text
    assert "| plays |" in text and "| within_one_accuracy |" in text.replace(" QWK", "")
    assert "over seeds" not in text  # one seed: no spread table
    again = dataclasses.replace(report, seed=1)  # stands in for a second seed's report
    assert "| vq_model − lightgbm |" in real_report.results_section([report, again], "vq ...")


def test_write_section_appends_once_then_replaces_in_place(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# results\n\n## labels\n\nfast.\n")
    real_report.write_section(path, f"{real_report.SECTION}\n\nfirst\n")
    assert (
        path.read_text() == f"# results\n\n## labels\n\nfast.\n\n{real_report.SECTION}\n\nfirst\n"
    )
    with open(path, "a") as f:  # someone appends another section after ours
        f.write("\n## training\n\nslow.\n")
    real_report.write_section(path, f"{real_report.SECTION}\n\nsecond\n")
    assert path.read_text() == (
        f"# results\n\n## labels\n\nfast.\n\n{real_report.SECTION}\n\nsecond\n"
        "\n## training\n\nslow.\n"
    )
    new = tmp_path / "new" / "RESULTS.md"
    real_report.write_section(new, f"{real_report.SECTION}\n\nonly\n")
    assert new.read_text() == f"{real_report.SECTION}\n\nonly\n"
