"""The same chain on `VQ_LAKE=s3://...` against a real S3 endpoint (moto_server) on 127.0.0.1."""

from pathlib import Path

import boto3
import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster_aws.s3 import S3Resource

from vq_assets.core.lake.store import Lake
from vq_assets_tests.dagster_util import materialize_days
from vq_assets_tests.defs.test_ingest_labels_chain import DAYS, build_lake
from vq_assets_tests.servers import moto_s3

BUCKET = "vq-test"


@pytest.fixture
def s3_endpoint(monkeypatch):
    with moto_s3() as url:
        # Credentials and endpoint reach the code only through the environment.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield url


def _upload(local_root: Path, prefix: str) -> None:
    client = boto3.client("s3")
    for path in local_root.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(local_root)}")


def test_chain_on_s3_matches_local(tmp_path, s3_endpoint):
    local = tmp_path / "local"
    build_lake(local)
    (local / "landing" / "videos" / f"dt={DAYS[0]}" / "_SUCCESS").unlink()
    _upload(local, "lake")
    (local / "landing" / "videos" / f"dt={DAYS[0]}" / "_SUCCESS").touch()
    s3_root = f"s3://{BUCKET}/lake"
    with dg.DagsterInstance.ephemeral() as instance:
        # A day whose marker has not landed fails, naming the marker.
        (missing,) = materialize_days(
            ["raw_videos"], DAYS[:1], s3_root, instance, S3Resource(), raise_on_error=False
        )
        failure = next(e for e in missing.all_events if e.event_type_value == "STEP_FAILURE")
        assert f"s3://{BUCKET}/lake/landing/videos/dt={DAYS[0]}/_SUCCESS" in str(
            failure.event_specific_data.error
        )
        boto3.client("s3").put_object(
            Bucket=BUCKET, Key=f"lake/landing/videos/dt={DAYS[0]}/_SUCCESS", Body=b""
        )
        names = ["raw_videos", "watch_events", "video_watch_daily"]
        for root, s3 in ((s3_root, S3Resource()), (local, None)):
            materialize_days(names, DAYS, root, instance, s3)
            materialize_days(["video_labels_7d"], DAYS[:2], root, instance, s3)
        # Re-running a partition on S3 replaces it.
        materialize_days(["video_labels_7d"], DAYS[:1], s3_root, instance, S3Resource())
    keys = [
        o["Key"]
        for o in boto3.client("s3").list_objects_v2(
            Bucket=BUCKET, Prefix=f"lake/assets/video_labels_7d/dt={DAYS[0]}/"
        )["Contents"]
    ]
    assert keys == [f"lake/assets/video_labels_7d/dt={DAYS[0]}/part-0.parquet"]
    s3_lake = LakeResourceForTest.lake(s3_root)
    for day in DAYS[:2]:
        remote = pq.read_table(s3_lake.asset_file("video_labels_7d", day), filesystem=s3_lake.fs)
        here = pq.read_table(Lake.local(local).asset_file("video_labels_7d", day))
        assert remote.equals(here)
        assert remote.num_rows == 2


class LakeResourceForTest:
    @staticmethod
    def lake(root: str) -> Lake:
        from vq_assets.resources import LakeResource

        return LakeResource(root=root, s3=S3Resource()).get_lake()
