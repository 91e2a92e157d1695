"""Retraining: the weekly training set, the quality model (MLflow + gate), its evaluation."""

import dataclasses
import tempfile
from pathlib import Path

import dagster as dg
import mlflow
import pyarrow as pa

from vq_assets.core.evaluation import variants as ev
from vq_assets.core.model import features, registry
from vq_assets.core.lake.contract import VIDEOS_SCHEMA
from vq_assets.core.labels.windows import LABELS_SCHEMA
from vq_assets.core.lake.store import Lake, PartitionFiles
from vq_assets.core.evaluation.metrics import mean_spearman
from vq_assets.core.model.train import TrainConfig, save_model
from vq_assets.defs.embeddings import K8S_GPU_TAGS
from vq_assets.partitions import TRAINING_DAYS, weekly
from vq_assets.report import evaluation_tables
from vq_assets.resources import DeviceResource, DuckDBResource, LakeResource, MlflowResource

TRAINING_INS = {
    name: dg.AssetIn(partition_mapping=TRAINING_DAYS)
    for name in ("raw_videos", "video_embeddings", "creator_features", "video_labels_7d")
}


@dg.asset(
    partitions_def=weekly,
    io_manager_key="lake_io",
    group_name="training",
    kinds={"duckdb", "parquet"},
    ins=TRAINING_INS,
)
def training_set(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBResource,
    raw_videos: PartitionFiles,
    video_embeddings: PartitionFiles,
    creator_features: PartitionFiles,
    video_labels_7d: PartitionFiles,
) -> dg.Output:
    """One row per video of the label days complete when week W starts (D <= S - 8), joining
    labels, embeddings and point-in-time creator features; split by time into
    train / validation / test days."""
    with duckdb.connect() as con:
        raw_videos.register(con, "videos", VIDEOS_SCHEMA)
        video_embeddings.register(con, "embeddings")
        creator_features.register(con, "creator")
        video_labels_7d.register(con, "labels", LABELS_SCHEMA)
        rows = features.joined_rows(con, with_labels=True)
        labelled = con.sql("SELECT count(*) FROM labels").fetchall()[0][0]
    days = [d.isoformat() for d in rows.column("day").to_pylist()]
    split_of = features.split_days(sorted(set(days)))
    table = rows.append_column("split", pa.array([split_of[d] for d in days], pa.string()))
    by_split = {
        s: sum(1 for d in days if split_of[d] == s) for s in ("train", "validation", "test")
    }
    return dg.Output(
        table,
        metadata={
            "rows": table.num_rows,
            **{f"rows_{s}": n for s, n in by_split.items()},
            "label_days": dg.MetadataValue.json(sorted(split_of)),
            "days_by_split": dg.MetadataValue.json(
                {s: [d for d, x in sorted(split_of.items()) if x == s] for s in by_split}
            ),
            "labelled_videos_without_features": labelled - table.num_rows,
        },
    )


class ModelConfig(dg.Config):
    # The network's shape: defaults from core's ModelShape, the one place they are set.
    width: int = ev.ModelShape.width
    cross_layers: int = ev.ModelShape.cross_layers
    cross_rank: int = ev.ModelShape.cross_rank
    mlp: list[int] = list(ev.ModelShape.mlp)
    dropout: float = ev.ModelShape.dropout
    # Probability of dropping a whole feature group per training row (core.model.GroupDropout).
    group_dropout: float = ev.ModelShape.group_dropout
    # Independently seeded networks averaged into the model (variance down, cost x members).
    members: int = ev.ModelShape.members
    # avg_watch_time_s rows weigh plays / (plays + k): few plays make a noisy mean.
    watch_time_prior_plays: float = ev.ModelShape.watch_time_prior_plays
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 30
    patience: int = 4
    seed: int = 0
    # Embedding groups whitened before training (FeatureNormalizer). Measured on the demo world:
    # whitening the image embedding lifts every task's Spearman; whitening the MiniLM text
    # embedding lowers them (it amplifies its many near-empty directions).
    whiten: list[str] = ["image_emb"]
    gate_tolerance: float = 0.01

    def shape(self) -> ev.ModelShape:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(ev.ModelShape)}
        return ev.ModelShape(**{**values, "mlp": tuple(self.mlp)})

    def train_config(self, device: DeviceResource, checkpoint_dir: str | None) -> TrainConfig:
        return TrainConfig(
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            patience=self.patience,
            seed=self.seed,
            device=device.setup(),
            precision=device.precision,
            checkpoint_dir=checkpoint_dir,
            whiten=tuple(self.whiten),
        )


def _md_table(metrics: dict[str, float]) -> str:
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    return "\n".join(lines)


@dg.asset(
    partitions_def=weekly,
    io_manager_key="lake_io",
    group_name="training",
    pool="gpu",
    op_tags=K8S_GPU_TAGS,
    kinds={"pytorch", "mlflow"},
    check_specs=[dg.AssetCheckSpec("promotion_gate", asset="quality_model", blocking=True)],
)
def quality_model(
    context: dg.AssetExecutionContext,
    config: ModelConfig,
    lake: LakeResource,
    device: DeviceResource,
    mlflow_tracking: MlflowResource,
    training_set: PartitionFiles,
):
    """The DCN-v2/DLRM multi-task model trained on training_set[W], logged to MLflow,
    registered as `vq-quality`, and promoted to the `production` alias only through the gate."""
    week, lk = context.partition_key, lake.get_lake()
    table = training_set.read()
    with (
        registry.tracking(mlflow_tracking.tracking_uri, mlflow_tracking.artifact_root) as client,
        mlflow.start_run(run_name=f"quality-{week}") as run,
    ):
        registry.log_params({**config.model_dump(), "week": week, "rows": table.num_rows})

        def on_epoch(record: dict[str, float]) -> None:
            member = int(record.get("member", 0))
            mlflow.log_metrics(
                {
                    f"member{member}.{k}": v
                    for k, v in record.items()
                    if k not in ("epoch", "member")
                },
                step=int(record["epoch"]),
            )
            context.log.info(
                f"member {member + 1}/{config.members} epoch {int(record['epoch'])}: "
                f"train_loss {record['train_loss']:.4f} val_loss {record['val_loss']:.4f} "
                f"({record['samples_per_s']:.0f} samples/s)"
            )

        with tempfile.TemporaryDirectory() as ckpt:
            trained = ev.train_full_model(
                table, config.shape(), config.train_config(device, ckpt), on_epoch
            )
        mlflow.log_metrics(trained.test_metrics)
        new_score = mean_spearman(trained.test_metrics)
        with tempfile.TemporaryDirectory() as tmp:
            save_model(
                tmp, trained.result.model, trained.result.model.config, trained.result.normalizer
            )
            version = registry.register_version(
                client, run.info.run_id, Path(tmp), lk, {"week": week}
            )
        current = registry.production_as_of(lk, week)
        current_score = (
            None
            if current is None
            else ev.mean_test_spearman(
                registry.load_version(lk, current["model_version"]), trained.test
            )
        )
        promoted, reason = ev.gate(new_score, current_score, config.gate_tolerance)
        newest = all(w <= week for w in lk.list_days(lk.asset_dir("quality_model")))
        if promoted and newest:
            registry.set_production(client, version)
        mlflow.set_tags({"promoted": str(promoted), "gate": reason})
    record = {
        "week": week,
        "model_version": version,
        "run_id": run.info.run_id,
        "promoted": promoted,
        "test_mean_spearman": new_score,
        "production_before": None if current is None else current["model_version"],
        "production_before_test_mean_spearman": current_score,
        "gate_reason": reason,
        "best_epoch": trained.result.best_epoch,
        "model_path": lk.uri(registry.lake_model_dir(lk, version)),
    }
    yield dg.Output(
        pa.Table.from_pylist([record]),
        metadata={
            "model_version": version,
            "mlflow_run_id": run.info.run_id,
            "promoted": promoted,
            "gate": reason,
            "test_mean_spearman": new_score,
            "metrics": dg.MetadataValue.md(_md_table(trained.test_metrics)),
            "model_path": dg.MetadataValue.path(record["model_path"]),
        },
    )
    yield dg.AssetCheckResult(
        check_name="promotion_gate",
        passed=promoted,
        metadata={"reason": reason, "new": new_score, "production": current_score or float("nan")},
    )


def _truth(lake: Lake, days: list[str]) -> pa.Table | None:
    """The simulator's hidden truth for `days`, when the lake has it (never a feature)."""
    files = [f for d in days for f in lake.list_files(lake.path("truth", "videos", f"dt={d}"))]
    return pa.concat_tables([lake.read_table(f) for f in files]) if files else None


@dg.asset(
    partitions_def=weekly,
    io_manager_key="lake_io",
    group_name="training",
    pool="gpu",
    op_tags=K8S_GPU_TAGS,
    kinds={"pytorch", "lightgbm", "mlflow"},
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: ModelConfig,
    lake: LakeResource,
    device: DeviceResource,
    mlflow_tracking: MlflowResource,
    training_set: PartitionFiles,
    quality_model: PartitionFiles,
) -> dg.Output:
    """The §6 metrics on the test days, the feature ablation, slices by language and duration,
    the creator-mean and LightGBM baselines, the best achievable Spearman (simulated lakes) and
    the demo lists; also logged to the model's MLflow run with calibration plots."""
    week, lk = context.partition_key, lake.get_lake()
    record = quality_model.read().to_pylist()[0]
    table = training_set.read()
    test_days = sorted(
        {
            d.isoformat()
            for d, s in zip(
                table.column("day").to_pylist(), table.column("split").to_pylist(), strict=True
            )
            if s == "test"
        }
    )
    report = ev.evaluate_all(
        table,
        registry.load_version(lk, record["model_version"]),
        config.shape(),
        config.train_config(device, None),
        _truth(lk, test_days),
    )
    demo_uri = lk.write_table(lk.asset_dir("model_evaluation_demo", week), report.demo)
    with (
        registry.tracking(mlflow_tracking.tracking_uri, mlflow_tracking.artifact_root),
        mlflow.start_run(run_id=record["run_id"]),
    ):
        registry.log_evaluation(report.rows, report.figures, report.demo)
    demo_md = report.demo.select(
        ["list", "rank", "pred_skip_rate", "skip_rate", "plays", "caption"]
    ).to_pylist()
    return dg.Output(
        report.table(record["model_version"]),
        metadata={
            "model_version": record["model_version"],
            "test_days": dg.MetadataValue.json(test_days),
            # The same tables the demo report prints, from the same rows.
            "model_vs_baselines_and_ablation": dg.MetadataValue.md(
                f"```\n{evaluation_tables(report.rows)}\n```"
            ),
            "demo_lists": dg.MetadataValue.md(
                "| list | rank | pred skip rate | true skip rate | plays | caption |\n"
                "|---|---|---|---|---|---|\n"
                + "\n".join(
                    f"| {r['list']} | {r['rank']} | {r['pred_skip_rate']:.3f} | "
                    f"{r['skip_rate'] if r['skip_rate'] is None else round(r['skip_rate'], 3)} | "
                    f"{r['plays']} | {(r['caption'] or '')[:60]} |"
                    for r in demo_md
                )
            ),
            "demo_lists_path": dg.MetadataValue.path(demo_uri),
            "mlflow_run_id": record["run_id"],
        },
    )


defs = dg.Definitions(assets=[training_set, quality_model, model_evaluation])
