"""The retrieval_prior asset and its blocking point-in-time check through Dagster, on the small
hand-written lake of the ingest and label tests."""

import datetime as dt
import math

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vq_assets.core.lake.store import Lake
from vq_assets.core.related import prior as core
from vq_assets_tests.dagster_util import materialize_days
from vq_assets_tests.defs.test_ingest_labels_chain import DAYS, build_lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """DAYS 1..10 ingested and embedded, the labels of days 1 and 2 (closed by day 10)."""
    root = tmp_path_factory.mktemp("prior")
    build_lake(root)
    with dg.DagsterInstance.ephemeral() as instance:
        upstream = ["raw_videos", "watch_events", "video_watch_daily", "video_embeddings"]
        materialize_days(upstream, DAYS, root, instance)
        materialize_days(["video_labels_7d"], DAYS[:2], root, instance)
        yield root, instance


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_neighbours_are_the_videos_of_closed_label_days(lake):
    root, instance = lake
    # Day 8: no label day has closed (D-8 is before the first day): every prior is empty.
    # Day 10: days 1 and 2 have (4 videos); days 3..9 are never neighbours.
    results = materialize_days(["retrieval_prior"], [DAYS[7], DAYS[9]], root, instance)
    for result in results:
        (check,) = result.get_asset_check_evaluations()
        assert check.check_name == "point_in_time" and check.passed
    lk = Lake.local(root)
    empty = pq.read_table(lk.asset_file("retrieval_prior", DAYS[7])).to_pylist()
    assert [r["n_neighbours"] for r in empty] == [0, 0]
    assert all(r["knn_log1p_plays"] is None for r in empty)
    rows = pq.read_table(lk.asset_file("retrieval_prior", DAYS[9])).to_pylist()
    assert sorted(r["video_id"] for r in rows) == ["v9a", "v9b"]
    for r in rows:
        assert r["has_content"] and r["n_neighbours"] == 4
        assert r["newest_neighbour_created_at"] == dt.datetime(2026, 1, 2, 18, tzinfo=dt.UTC)
        # The four neighbours had 8 plays each in their windows.
        assert r["knn_log1p_plays"] == pytest.approx(math.log(9))
    meta = _metadata(results[1])
    assert meta["corpus_videos"] == 4 and meta["videos_without_content"] == 0
    assert meta["label_days_read"] == 2 and meta["latest_label_day"] == DAYS[1]


def test_a_neighbour_of_an_open_window_fails_the_check_and_is_not_published(
    lake, monkeypatch: pytest.MonkeyPatch
):
    root, instance = lake
    day = DAYS[8]
    computed = core.prior_for_day

    def leaky(con, day, **kw):  # as if a video of D-7 had been a neighbour
        table, summary = computed(con, day, **kw)
        late = pa.array([core.cutoff(day)] * table.num_rows, pa.timestamp("us", tz="UTC"))
        column = table.schema.get_field_index("newest_neighbour_created_at")
        return table.set_column(column, "newest_neighbour_created_at", late), summary

    monkeypatch.setattr(core, "prior_for_day", leaky)
    (result,) = materialize_days(["retrieval_prior"], [day], root, instance, raise_on_error=False)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.metadata["rows_with_open_window_neighbours"].value == 2
    lk = Lake.local(root)
    assert not lk.exists(lk.asset_file("retrieval_prior", day))
