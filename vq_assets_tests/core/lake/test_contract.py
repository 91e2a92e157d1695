"""Every rule of the input contract (DESIGN §3), on hand-written landing days."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vq_assets.core.lake.contract import CONTRACTS, ContractError, validate_day
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import Lake
from vq_assets_tests.landing import event, ts, video, write_day

DAY = "2026-01-05"


def _validate(tmp_path, table, rows, **kw):
    write_day(tmp_path, table, DAY, rows)
    with connect() as con:
        if "seen" in kw:
            seen = kw.pop("seen")
            con.register("seen", pa.table({"video_id": seen, "dt": ["2026-01-04"] * len(seen)}))
            kw["seen_video_ids"] = "seen"
        return validate_day(con, Lake.local(tmp_path), CONTRACTS[table], DAY, **kw)


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"video_id": None}, "video_id is missing"),
        ({"video_id": " "}, "video_id is missing"),
        ({"creator_id": None}, "creator_id is missing"),
        ({"created_at": None}, "created_at is missing"),
        ({"created_at": ts("2026-01-06")}, "created_at outside the partition's day"),
        ({"created_at": ts(DAY, -0.001)}, "created_at outside the partition's day"),
        ({"duration_s": 0.0}, "duration_s is not > 0"),
        ({"duration_s": None}, "duration_s is not > 0"),
        ({"duration_s": float("nan")}, "duration_s is not > 0"),
        ({"duration_s": float("inf")}, "duration_s is not finite"),
        ({"language": "english"}, "language is not ISO-639-1"),
        ({"language": "xx"}, "language is not ISO-639-1"),
        ({"creator_followers": -1}, "creator_followers is negative"),
    ],
)
def test_each_video_rule_quarantines_with_its_reason(tmp_path, override, reason):
    good = video("v1", ts(DAY, 1))
    bad = video("v2", ts(DAY, 2)) | override
    result = _validate(tmp_path, "videos", [good, bad])
    assert result.valid.column("video_id").to_pylist() == ["v1"]
    assert result.rejects.num_rows == 1
    assert reason in result.rejects.column("reason")[0].as_py()
    assert result.rejects.column("source_row")[0].as_py() == 1
    assert result.rejects.column("source_file")[0].as_py().endswith("part-00000.parquet")
    assert result.quarantine_share == 0.5


def test_nullable_video_fields_and_edges_pass(tmp_path):
    rows = [
        video("v1", ts(DAY), language=None, caption=None, creator_followers=None),
        video("v2", ts(DAY, 23.99), duration_s=1e-3),
    ]
    result = _validate(tmp_path, "videos", rows)
    assert result.valid.num_rows == 2 and result.rejects.num_rows == 0


def test_every_broken_rule_is_named(tmp_path):
    bad = video("v1", ts("2026-02-01"), duration_s=-1.0, creator_id=None)
    reason = _validate(tmp_path, "videos", [bad]).rejects.column("reason")[0].as_py()
    for part in ("creator_id is missing", "outside the partition's day", "duration_s"):
        assert part in reason


def test_video_ids_unique_within_and_across_days(tmp_path):
    rows = [video("v1", ts(DAY, 1)), video("v1", ts(DAY, 2)), video("v0", ts(DAY, 3))]
    result = _validate(tmp_path, "videos", rows, seen=["v0"])
    assert result.valid.column("video_id").to_pylist() == ["v1"]
    reasons = sorted(result.rejects.column("reason").to_pylist())
    assert reasons == [
        "duplicate video_id within the day",
        "video_id already ingested on 2026-01-04",
    ]


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"video_id": None}, "video_id is missing"),
        ({"user_id": ""}, "user_id is missing"),
        ({"event_ts": None}, "event_ts is missing"),
        ({"event_ts": ts("2026-01-06")}, "event_ts outside the partition's day"),
        ({"watch_time_s": -0.5}, "watch_time_s is not >= 0"),
        ({"watch_time_s": None}, "watch_time_s is not >= 0"),
        ({"watch_time_s": float("inf")}, "watch_time_s is not finite"),
    ],
)
def test_each_event_rule_quarantines_with_its_reason(tmp_path, override, reason):
    good = event("v1", ts(DAY, 1), 0.0, liked=None)
    bad = event("v1", ts(DAY, 2), 5.0) | override
    result = _validate(tmp_path, "watch_events", [good, bad])
    assert result.valid.num_rows == 1
    assert reason in result.rejects.column("reason")[0].as_py()


def test_exact_duplicate_events_dropped_once(tmp_path):
    e = event("v1", ts(DAY, 1), 4.0, liked=None)
    near = event("v1", ts(DAY, 1), 4.5)
    result = _validate(tmp_path, "watch_events", [e, e, e, near])
    assert result.valid.num_rows == 2
    assert result.duplicates_dropped == 2
    assert result.rejects.num_rows == 0


def test_missing_marker_names_it(tmp_path):
    write_day(tmp_path, "videos", DAY, [video("v1", ts(DAY, 1))], marker=False)
    with connect() as con, pytest.raises(ContractError, match=r"dt=2026-01-05/_SUCCESS"):
        validate_day(con, Lake.local(tmp_path), CONTRACTS["videos"], DAY)


def test_unreadable_file_fails_the_day_naming_it(tmp_path):
    write_day(tmp_path, "videos", DAY, [video("v1", ts(DAY, 1))])
    broken = tmp_path / "landing" / "videos" / f"dt={DAY}" / "part-00001.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with connect() as con, pytest.raises(ContractError, match="part-00001.parquet"):
        validate_day(con, Lake.local(tmp_path), CONTRACTS["videos"], DAY)


def test_missing_or_mistyped_column_names_file_and_column(tmp_path):
    path = write_day(tmp_path, "videos", DAY, [video("v1", ts(DAY, 1))])
    table = pq.read_table(path)
    pq.write_table(table.drop(["duration_s"]), path)
    with connect() as con, pytest.raises(ContractError, match="'duration_s' is missing"):
        validate_day(con, Lake.local(tmp_path), CONTRACTS["videos"], DAY)
    idx = table.schema.get_field_index("duration_s")
    pq.write_table(table.set_column(idx, "duration_s", pa.array(["ten"])), path)
    with connect() as con, pytest.raises(ContractError, match="'duration_s' has type string"):
        validate_day(con, Lake.local(tmp_path), CONTRACTS["videos"], DAY)


def test_rows_from_several_files_are_all_read(tmp_path):
    write_day(tmp_path, "videos", DAY, [video("v2", ts(DAY, 2))], name="part-00001.parquet")
    result = _validate(tmp_path, "videos", [video("v1", ts(DAY, 1)), video("v3", ts(DAY, 3))])
    assert sorted(result.valid.column("video_id").to_pylist()) == ["v1", "v2", "v3"]
    assert len(result.files) == 2
