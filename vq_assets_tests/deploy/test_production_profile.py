"""`VQ_DEPLOYMENT=production` for real: a day's chain and a retraining on a Dagster instance
stored in PostgreSQL (`deploy/dagster.production.yaml`, unchanged), an MLflow tracking server on
PostgreSQL with its artifacts on S3, and an S3 lake, all started here on 127.0.0.1 (moto for S3,
the distribution's PostgreSQL: `.ci/run` installs it where it is missing).
"""

import datetime as dt
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import boto3
import dagster as dg
import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster_aws.s3 import S3Resource
from mlflow.tracking import MlflowClient

from vq_assets.core.model import registry
from vq_assets.core.model.inference import CONFIG_FILE, MODEL_FILE, NORMALIZER_FILE
from vq_assets.core.sources.simulator import simulate
from vq_assets.definitions import build_definitions
from vq_assets.partitions import START_DATE
from vq_assets.replay import Replay
from vq_assets.resources import LakeResource, resources_for_deployment
from vq_assets_tests.servers import mlflow_server, moto_s3, postgres, postgres_bin

REPO = Path(__file__).resolve().parents[2]
INSTANCE_YAML = REPO / "deploy" / "dagster.production.yaml"
BUCKET = "vq-prod"
WEEK = "2026-01-18"  # the first week with 10 complete label days
END = "2026-01-19"
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

PG_BIN = postgres_bin()
needs_postgres = pytest.mark.skipif(
    PG_BIN is None,
    reason="PostgreSQL's initdb is neither on PATH nor in /usr/lib/postgresql/*/bin "
    "(.ci/run installs it: apt-get install postgresql)",
)


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("production")
    with (
        pytest.MonkeyPatch.context() as env,
        moto_s3() as s3_url,
        postgres(PG_BIN) as pg,
    ):
        for k, v in AWS.items():
            env.setenv(k, v)
        env.setenv("AWS_ENDPOINT_URL", s3_url)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        pg.create_databases("dagster", "mlflow")
        server_env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_url}
        with mlflow_server(
            pg.url("mlflow", driver="psycopg2"),
            f"s3://{BUCKET}/mlflow",
            server_env,
            tmp / "mlflow.log",
        ) as tracking_uri:
            env.setenv("VQ_DEPLOYMENT", "production")
            env.setenv("VQ_LAKE", f"s3://{BUCKET}/lake")
            env.setenv("MLFLOW_TRACKING_URI", tracking_uri)
            env.setenv("DAGSTER_PG_HOST", pg.host)
            env.setenv("DAGSTER_PG_PORT", str(pg.port))
            env.setenv("DAGSTER_PG_USER", pg.user)
            env.setenv("DAGSTER_PG_PASSWORD", pg.password)
            env.setenv("DAGSTER_PG_DB", "dagster")
            env.setenv("DAGSTER_COMPUTE_LOG_BUCKET", BUCKET)
            home = tmp / "dagster_home"
            home.mkdir()
            shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
            env.setenv("DAGSTER_HOME", str(home))

            lake = LakeResource(root=f"s3://{BUCKET}/lake", s3=S3Resource()).get_lake()
            simulate(lake, dt.date.fromisoformat(START_DATE), 19, 25, seed=5, media=False)
            defs = build_definitions()
            try:
                with dg.DagsterInstance.from_config(str(home)) as instance:
                    replay = Replay(
                        defs, instance, lake, train_days=28, min_train_days=10, log=lambda _: None
                    )
                    replay.run(START_DATE, END)
                    yield SimpleNamespace(
                        lake=lake,
                        instance=instance,
                        replay=replay,
                        pg=pg,
                        s3=s3,
                        tracking_uri=tracking_uri,
                    )
            finally:
                # MLflow keeps the last URI in a global (and exports it); later tests set theirs.
                mlflow.set_tracking_uri(None)


@needs_postgres
def test_the_instance_is_postgres_with_a_tag_limited_queue_and_run_monitoring(production):
    instance = production.instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    queue = instance.get_concurrency_config().run_queue_config
    limits = {limit["key"]: limit["limit"] for limit in queue.tag_concurrency_limits}
    assert {"dagster/backfill", "vq/gpu"} <= limits.keys()
    assert instance.run_monitoring_enabled

    # Every run of the replay is in PostgreSQL, and succeeded.
    conn = production.pg.connect("dagster")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status, count(*) FROM runs GROUP BY status")
            by_status = dict(cur.fetchall())
    finally:
        conn.close()
    assert by_status == {"SUCCESS": production.replay.runs}
    jobs = {r.job_name for r in instance.get_runs()}
    assert {"daily_chain", "labels", "retrain"} <= jobs
    assert "2026-01-19" in instance.get_materialized_partitions(dg.AssetKey("quality_scores"))
    # Step output outlives the process that ran it: the compute logs are in S3.
    logs = production.s3.list_objects_v2(Bucket=BUCKET, Prefix="dagster/compute_logs/")
    assert logs.get("KeyCount", 0) > 0


@needs_postgres
def test_the_model_is_registered_on_the_tracking_server_with_artifacts_on_s3(production):
    lake = production.lake
    record = registry.read_record(lake, WEEK)
    assert record.promoted  # the first model has nothing to beat
    client = MlflowClient(production.tracking_uri)
    version = client.get_model_version(registry.MODEL_NAME, str(record.model_version))
    assert version.run_id == record.run_id
    assert registry.production_version(client) == record.model_version
    run = client.get_run(record.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # uploaded through the server
    assert run.data.metrics  # the training run logged its metrics on the server

    keys = [
        o["Key"]
        for page in production.s3.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix="mlflow/"
        )
        for o in page.get("Contents", [])
    ]
    model_files = {k.rsplit("/", 1)[-1] for k in keys if f"/{record.run_id}/" in k}
    assert {MODEL_FILE, CONFIG_FILE, NORMALIZER_FILE} <= model_files
    # The lake copy the scorers load holds the files that were registered.
    model = registry.load_record(lake, record)
    assert model.config.tasks


@needs_postgres
def test_the_week_is_scored_into_the_s3_lake(production):
    lake = production.lake
    for day in ("2026-01-18", "2026-01-19"):
        path = lake.asset_file("quality_scores", day)
        assert lake.exists(path), lake.uri(path)
        scores = pq.read_table(path, filesystem=lake.fs)
        assert scores.num_rows > 0
        assert np.isfinite(scores["quality_score"].to_numpy()).all()


@pytest.mark.parametrize(
    ("lake", "tracking", "missing"),
    [
        ("/data/lake", "http://mlflow:5000", ["VQ_LAKE"]),
        ("s3://b/lake", None, ["MLFLOW_TRACKING_URI"]),
        ("s3://b/lake", "sqlite:///tmp/mlflow.db", ["MLFLOW_TRACKING_URI"]),
        (None, None, ["VQ_LAKE", "MLFLOW_TRACKING_URI"]),
    ],
)
def test_production_names_every_missing_setting(monkeypatch, lake, tracking, missing):
    for name, value in (("VQ_LAKE", lake), ("MLFLOW_TRACKING_URI", tracking)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="VQ_DEPLOYMENT=production needs") as e:
        resources_for_deployment("production")
    for name in missing:
        assert name in str(e.value)


def test_production_leaves_mlflow_artifacts_to_the_server_and_local_keeps_its_store(
    monkeypatch,
):
    monkeypatch.setenv("VQ_LAKE", "s3://b/lake")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.delenv("VQ_MLFLOW_ARTIFACTS", raising=False)
    tracking = resources_for_deployment("production")["mlflow_tracking"]
    assert tracking.artifact_root is None
    monkeypatch.delenv("VQ_LAKE")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    local = resources_for_deployment("local")["mlflow_tracking"]
    assert local.tracking_uri.startswith("sqlite:///")
    assert local.artifact_root.endswith("/mlflow/artifacts")
