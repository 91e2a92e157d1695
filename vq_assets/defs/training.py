"""Retraining: the weekly training set, the quality model (MLflow + gate), its evaluation."""

import dagster as dg
import mlflow
import numpy as np
import pyarrow as pa

from vq_assets.core.evaluation import tables
from vq_assets.core.evaluation.figures import save_figures
from vq_assets.core.evaluation.modality import modality_markdown
from vq_assets.core.labels.windows import LABELS_SCHEMA
from vq_assets.core.lake.contract import VIDEOS_SCHEMA
from vq_assets.core.lake.store import Lake, PartitionFiles
from vq_assets.core.model import features, registry
from vq_assets.core.model.retrain import retrain_week
from vq_assets.core.model.retrieval import without_neighbours
from vq_assets.core.model.settings import RUNTIME_FIELDS, ModelShape, TrainSettings
from vq_assets.core.model.text_regressor import TextRegressorSettings
from vq_assets.core.sources.simulator import expected_labels
from vq_assets.defs.config import DerivedConfig, config_from
from vq_assets.defs.k8s import K8S_TRAINING_SET_TAGS, K8S_TRAINING_TAGS
from vq_assets.partitions import TRAINING_DAYS, weekly
from vq_assets.report import (
    demo_lists_markdown,
    evaluation_tables,
    inline_png,
    metrics_markdown,
)
from vq_assets.resources import DeviceResource, DuckDBResource, LakeResource, MlflowResource

TRAINING_INS = {
    name: dg.AssetIn(partition_mapping=TRAINING_DAYS)
    for name in (
        "raw_videos",
        "video_embeddings",
        "creator_features",
        "retrieval_prior",
        "video_labels_7d",
    )
}


@dg.asset(
    op_tags=K8S_TRAINING_SET_TAGS,
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
    retrieval_prior: PartitionFiles,
    video_labels_7d: PartitionFiles,
) -> dg.Output:
    """One row per video of the label days complete when week W starts (D <= S - 8), joining
    labels, embeddings, point-in-time creator features and the retrieval prior; split by time
    into train / validation / test days."""
    with duckdb.connect() as con:
        raw_videos.register(con, "videos", VIDEOS_SCHEMA)
        video_embeddings.register(con, "embeddings")
        creator_features.register(con, "creator")
        retrieval_prior.register(con, "prior")
        video_labels_7d.register(con, "labels", LABELS_SCHEMA)
        rows = features.joined_rows(con, with_labels=True, with_prior=True)
        labelled = con.sql("SELECT count(*) FROM labels").fetchall()[0][0]
    table, days_by_split = features.with_time_split(rows)
    split = np.asarray(table.column("split").to_pylist())
    return dg.Output(
        table,
        metadata={
            "rows": table.num_rows,
            **{f"rows_{s}": int(np.sum(split == s)) for s in days_by_split},
            "label_days": dg.MetadataValue.json(
                sorted(d for v in days_by_split.values() for d in v)
            ),
            "days_by_split": dg.MetadataValue.json(days_by_split),
            "labelled_videos_without_features": labelled - table.num_rows,
            # Their retrieval group is zeros and `missing` (e.g. the world's first 8 days).
            "rows_without_retrieval_neighbours": int(without_neighbours(table).sum()),
        },
    )


# The network's shape and the optimiser, field for field from core's ModelShape and
# TrainSettings (their defaults are production's); device and precision come from the device
# resource.
QualityModelConfig = config_from(
    "QualityModelConfig",
    (ModelShape, TrainSettings),
    RUNTIME_FIELDS,
    gate_tolerance=(float, 0.01),
)
# The evaluation trains with the model's settings, and fine-tunes the text regressor of the
# modality study unless turned off (it costs CPU time, see README).
EvaluationConfig = config_from(
    "EvaluationConfig",
    (ModelShape, TrainSettings),
    RUNTIME_FIELDS,
    fine_tune_text=(bool, True),
    text_max_train_rows=(int, TextRegressorSettings.max_train_rows),
    text_epochs=(int, TextRegressorSettings.epochs),
)


def model_settings(
    config: DerivedConfig, device: DeviceResource
) -> tuple[ModelShape, TrainSettings]:
    where = device.setup()
    return config.to(ModelShape), config.to(TrainSettings, device=where, precision=device.precision)


@dg.asset(
    partitions_def=weekly,
    io_manager_key="lake_io",
    group_name="training",
    pool="gpu",
    op_tags=K8S_TRAINING_TAGS,
    kinds={"pytorch", "mlflow"},
    check_specs=[dg.AssetCheckSpec("promotion_gate", asset="quality_model", blocking=True)],
)
def quality_model(
    context: dg.AssetExecutionContext,
    config: QualityModelConfig,
    lake: LakeResource,
    device: DeviceResource,
    mlflow_tracking: MlflowResource,
    training_set: PartitionFiles,
):
    """The DCN-v2/DLRM multi-task model trained on training_set[W], logged to MLflow,
    registered as `vq-quality`, and promoted to the `production` alias only through the gate."""
    shape, settings = model_settings(config, device)
    record, trained = retrain_week(
        training_set.read(),
        context.partition_key,
        lake.get_lake(),
        shape=shape,
        settings=settings,
        gate_tolerance=config.gate_tolerance,
        tracking_uri=mlflow_tracking.tracking_uri,
        artifact_root=mlflow_tracking.artifact_root,
        params=config.model_dump(),
        say=context.log.info,
    )
    yield dg.Output(
        record.to_table(),
        metadata={
            "model_version": record.model_version,
            "mlflow_run_id": record.run_id,
            "promoted": record.promoted,
            "gate": record.gate_reason,
            "test_mean_spearman": record.test_mean_spearman,
            "best_epoch": record.best_epoch,
            "best_val_loss": float(trained.result.best_val_loss),
            **{
                f"val_loss.{task}": float(loss)
                for task, loss in trained.result.best_val_task_losses.items()
            },
            "epochs_trained": max(int(h["epoch"]) for h in trained.result.history),
            # Tasks whose labels the source does not keep have no head in this model.
            "tasks_left_out": dg.MetadataValue.json(trained.result.left_out),
            "metrics": dg.MetadataValue.md(metrics_markdown(trained.test_metrics)),
            "model_path": dg.MetadataValue.path(record.model_path),
        },
    )
    yield dg.AssetCheckResult(
        check_name="promotion_gate",
        passed=record.promoted,
        metadata={
            "reason": record.gate_reason,
            "new": record.test_mean_spearman,
            "production": record.production_before_test_mean_spearman or float("nan"),
        },
    )


def _truth(lake: Lake, days: list[str]) -> tables.Truth | None:
    """The simulator's hidden truth for `days`, when the lake has it (never a feature)."""
    files = [f for d in days for f in lake.list_files(lake.path("truth", "videos", f"dt={d}"))]
    if not files:
        return None
    truth = pa.concat_tables([lake.read_table(f) for f in files])
    return tables.Truth(truth.column("video_id").to_pylist(), expected_labels(truth))


@dg.asset(
    partitions_def=weekly,
    io_manager_key="lake_io",
    group_name="training",
    pool="gpu",
    op_tags=K8S_TRAINING_TAGS,
    kinds={"pytorch", "lightgbm", "mlflow"},
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    lake: LakeResource,
    device: DeviceResource,
    mlflow_tracking: MlflowResource,
    training_set: PartitionFiles,
    quality_model: PartitionFiles,
) -> dg.Output:
    """The §6 metrics on the test days, the feature ablation, the modality study, slices by
    language and duration, the creator-mean and LightGBM baselines, the best achievable
    Spearman (simulated lakes) and the demo lists; also logged to the model's MLflow run with
    calibration, modality and fine-tuning plots."""
    week, lk = context.partition_key, lake.get_lake()
    record = registry.ModelRecord.from_table(quality_model.read())
    table = training_set.read()
    test_days = tables.test_days(table)
    shape, settings = model_settings(config, device)
    text_regressor = (
        TextRegressorSettings(
            max_train_rows=config.text_max_train_rows,
            epochs=config.text_epochs,
            seed=settings.seed,
            device=settings.device,
        )
        if config.fine_tune_text
        else None
    )
    report = tables.evaluate_all(
        table,
        registry.load_record(lk, record),
        shape,
        settings,
        _truth(lk, test_days),
        text_regressor,
    )
    demo_uri = lk.write_table(lk.asset_dir("model_evaluation_demo", week), report.demo)
    with (
        registry.tracking(mlflow_tracking.tracking_uri, mlflow_tracking.artifact_root),
        mlflow.start_run(run_id=record.run_id),
    ):
        registry.log_evaluation(report.rows, report.figures, report.demo, report.series)
    # The figures also beside the tables in the lake, and inline in the UI.
    figures_dir = lk.asset_dir("model_evaluation_figures", week)
    images = save_figures(lk, figures_dir, report.figures)
    return dg.Output(
        report.table(record.model_version),
        metadata={
            "model_version": record.model_version,
            "test_days": dg.MetadataValue.json(test_days),
            # The same tables the demo report prints, from the same rows.
            "model_vs_baselines_and_ablation": dg.MetadataValue.md(
                f"```\n{evaluation_tables(report.rows)}\n```"
            ),
            "modality": dg.MetadataValue.md(modality_markdown(report.rows, report.not_measured)),
            "demo_lists": dg.MetadataValue.md(demo_lists_markdown(report.demo)),
            "demo_lists_path": dg.MetadataValue.path(demo_uri),
            "mlflow_run_id": record.run_id,
            "figures_path": dg.MetadataValue.path(lk.uri(figures_dir)),
            **{
                f"plot.{name.removesuffix('.png')}": dg.MetadataValue.md(inline_png(data, name))
                for name, data in images.items()
            },
            **tables.headline_metrics(report.rows),
        },
    )


defs = dg.Definitions(assets=[training_set, quality_model, model_evaluation])
