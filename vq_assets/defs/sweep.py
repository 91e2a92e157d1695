"""Sweeps: the week's training set trained over a grid (or a seeded random draw) of the model's
settings as MLflow child runs, selected on validation days; applying the winner stays a
separate, explicit step (`vq sweep --apply RUN_ID`)."""

import dagster as dg
import pyarrow as pa
import pydantic

from vq_assets.core.lake.store import PartitionFiles
from vq_assets.core.model.settings import RUNTIME_FIELDS, ModelShape, TrainSettings
from vq_assets.core.model.sweep import SCORE, run_sweep
from vq_assets.defs.config import config_from
from vq_assets.defs.k8s import K8S_TRAINING_TAGS
from vq_assets.defs.training import model_settings
from vq_assets.partitions import weekly
from vq_assets.report import inline_png
from vq_assets.resources import DeviceResource, MlflowResource

# The base settings of every child, field for field from core's dataclasses (production's
# defaults), plus the space to sweep.
QualitySweepConfig = config_from(
    "QualitySweepConfig",
    (ModelShape, TrainSettings),
    RUNTIME_FIELDS,
    space=(
        str,
        pydantic.Field(
            default='{"lr": [0.001, 0.002, 0.004]}',
            description="JSON object: setting name -> list of values to try",
        ),
    ),
    trials=(
        int,
        pydantic.Field(default=0, description="0: the whole grid; N: N grid points drawn"),
    ),
    search_seed=(int, pydantic.Field(default=0, description="seed of the random draw")),
)


def _table_metadata(table: pa.Table) -> dg.MetadataValue:
    """A table as Dagster table metadata: numbers as they are, anything else as text."""
    kinds = {pa.float64(): "float", pa.int64(): "int", pa.bool_(): "bool"}
    types = {f.name: kinds.get(f.type, "string") for f in table.schema}
    records = [
        dg.TableRecord(
            {k: v if v is None or types[k] != "string" else str(v) for k, v in row.items()}
        )
        for row in table.to_pylist()
    ]
    columns = [dg.TableColumn(name, kind) for name, kind in types.items()]
    return dg.MetadataValue.table(records, dg.TableSchema(columns))


@dg.asset(
    partitions_def=weekly,
    io_manager_key="lake_io",
    group_name="training",
    pool="gpu",
    op_tags=K8S_TRAINING_TAGS,
    kinds={"pytorch", "mlflow"},
)
def quality_sweep(
    context: dg.AssetExecutionContext,
    config: QualitySweepConfig,
    device: DeviceResource,
    mlflow_tracking: MlflowResource,
    training_set: PartitionFiles,
) -> dg.Output:
    """One row per sweep child: its point, its mean validation Spearman (the selection score)
    and its per-task validation Spearman; the MLflow parent holds the same table and a plot of
    the score against each setting. The test days are dropped before anything is trained."""
    shape, settings = model_settings(config, device)
    result = run_sweep(
        training_set.read(),
        config.space,
        shape=shape,
        settings=settings,
        tracking_uri=mlflow_tracking.tracking_uri,
        artifact_root=mlflow_tracking.artifact_root,
        name=context.partition_key,
        trials=config.trials or None,
        seed=config.search_seed,
        params={"week": context.partition_key},
        say=context.log.info,
    )
    best = result.best["child_run_id"]
    return dg.Output(
        result.summary,
        metadata={
            "summary": _table_metadata(result.summary),
            "mlflow_parent_run_id": result.parent_run_id,
            "best_child_run_id": best,
            "best_point": dg.MetadataValue.json(result.best_point),
            f"best_{SCORE}": float(result.best[SCORE]),
            "apply_with": dg.MetadataValue.md(f"`vq sweep --apply {best}` (then commit)"),
            "plot.score_by_setting": dg.MetadataValue.md(
                inline_png(result.plot, "score_by_setting")
            ),
        },
    )


sweep_job = dg.define_asset_job(
    "sweep",
    selection=["quality_sweep"],
    tags={"vq/gpu": "true"},
    description="A sweep over the model's settings on the week's training set (MLflow children "
    "under one parent); never changes the weekly model's settings by itself.",
)

defs = dg.Definitions(assets=[quality_sweep], jobs=[sweep_job])
