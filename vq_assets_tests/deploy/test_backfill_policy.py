"""Backfills of video_embeddings: several days per run, one encoder load, still a file per day."""

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vq_assets.core.embeddings.registry as registry
from vq_assets.core.lake.store import PARTITION_COLUMN, Lake, LakeError, split_partitions
from vq_assets.definitions import build_definitions
from vq_assets.defs.k8s import EMBEDDINGS_PARTITIONS_PER_RUN
from vq_assets_tests.dagster_util import materialize_days, resources
from vq_assets_tests.landing import ts, video, write_day

DAYS = ["2026-01-05", "2026-01-06", "2026-01-07"]
VIDEOS_PER_DAY = {"2026-01-05": 2, "2026-01-06": 1, "2026-01-07": 3}
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def _table(days: list[str]) -> pa.Table:
    return pa.table({"video_id": [f"v{i}" for i in range(len(days))], PARTITION_COLUMN: days})


def test_split_partitions_cuts_by_day_and_drops_the_column() -> None:
    parts = split_partitions(_table(["a", "b", "a"]), ["a", "b", "c"])
    assert [d for d, _ in parts] == ["a", "b", "c"]
    assert [t.column("video_id").to_pylist() for _, t in parts] == [["v0", "v2"], ["v1"], []]
    assert all(t.column_names == ["video_id"] for _, t in parts)


def test_split_partitions_single_and_unpartitioned_outputs_are_unchanged() -> None:
    plain = pa.table({"x": [1, 2]})
    assert split_partitions(plain, ["2026-01-05"]) == [("2026-01-05", plain)]
    assert split_partitions(plain, None) == [(None, plain)]


def test_split_partitions_refuses_what_it_cannot_place() -> None:
    with pytest.raises(LakeError, match="needs a '_partition' column"):
        split_partitions(pa.table({"x": [1]}), ["a", "b"])
    with pytest.raises(LakeError, match="outside the run"):
        split_partitions(_table(["a", "z"]), ["a", "b"])
    with pytest.raises(LakeError, match="unpartitioned"):
        split_partitions(_table(["a"]), None)


def test_write_partitions_writes_one_file_per_day(tmp_path: Path) -> None:
    lake = Lake.local(tmp_path)
    uris = lake.write_partitions("toy", _table(["a", "b", "a"]), ["a", "b"])
    assert uris == [lake.asset_file("toy", "a"), lake.asset_file("toy", "b")]
    assert pq.read_table(uris[0]).column("video_id").to_pylist() == ["v0", "v2"]


def test_video_embeddings_backfills_several_days_per_run() -> None:
    policy = build_definitions().resolve_assets_def("video_embeddings").backfill_policy
    assert policy == dg.BackfillPolicy.multi_run(EMBEDDINGS_PARTITIONS_PER_RUN)
    assert EMBEDDINGS_PARTITIONS_PER_RUN > 1


def test_a_three_day_run_loads_the_encoder_once_and_writes_each_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected: dict[str, list[str]] = {}
    for day in DAYS:
        rows = [video(f"{day}-v{i}", ts(day, 1 + i)) for i in range(VIDEOS_PER_DAY[day])]
        write_day(tmp_path, "videos", day, rows)
        expected[day] = [r["video_id"] for r in rows]
    instance = dg.DagsterInstance.ephemeral()
    materialize_days(["raw_videos"], DAYS, tmp_path, instance)

    loads = []
    real_load = registry.load_encoder

    def counting_load(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(registry, "load_encoder", counting_load)
    # What a backfill run over the range carries (the asset backfill daemon sets these tags).
    result = dg.materialize(
        list(build_definitions().assets),
        selection=["video_embeddings"],
        resources=resources(tmp_path),
        instance=instance,
        tags={RANGE_START: DAYS[0], RANGE_END: DAYS[-1]},
    )
    assert result.success
    assert len(loads) == 1, "the encoder is loaded once for the whole range"
    materialized = [
        e.event_specific_data.materialization.partition
        for e in result.get_asset_materialization_events()
    ]
    assert materialized == DAYS

    lake = Lake.local(tmp_path)
    assert lake.list_days(lake.asset_dir("video_embeddings")) == DAYS
    for day in DAYS:
        table = pq.read_table(lake.asset_file("video_embeddings", day))
        assert table.column("video_id").to_pylist() == expected[day]
        assert PARTITION_COLUMN not in table.column_names

    # A single-day run (the daily chain) still writes its one file, with the same columns.
    single = dg.materialize(
        list(build_definitions().assets),
        selection=["video_embeddings"],
        resources=resources(tmp_path),
        instance=instance,
        partition_key=DAYS[1],
    )
    assert single.success
    again = pq.read_table(lake.asset_file("video_embeddings", DAYS[1]))
    assert again.column("video_id").to_pylist() == expected[DAYS[1]]
    assert again.schema == pq.read_table(lake.asset_file("video_embeddings", DAYS[0])).schema
