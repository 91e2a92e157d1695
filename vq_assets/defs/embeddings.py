"""Embeddings: per-video image (frames, else cover) and caption vectors on the GPU resource."""

import time

import dagster as dg

from vq_assets.core.embeddings.media import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_TIMEOUT_S,
    DecodeLimits,
)
from vq_assets.core.embeddings.media_access import DEFAULT_MEDIA_ROOTS, LakeMediaReader
from vq_assets.core.embeddings.pipeline import (
    DEFAULT_MAX_CAPTION_CHARS,
    embed_videos,
    media_summary,
    truncate_captions,
)
from vq_assets.core.lake.store import PARTITION_COLUMN, PartitionFiles
from vq_assets.defs.k8s import EMBEDDINGS_PARTITIONS_PER_RUN, K8S_EMBEDDINGS_TAGS
from vq_assets.partitions import daily
from vq_assets.resources import PUBLISH, DeviceResource, EncoderResource, LakeResource


class EmbeddingsConfig(dg.Config):
    max_decode_error_share: float = 0.05
    # Where video_uri / thumbnail_uri may point: paths relative to the lake root, or absolute
    # (a local folder on a local lake, s3://bucket/prefix on an S3 lake). Anything else is
    # refused unread.
    media_roots: list[str] = list(DEFAULT_MEDIA_ROOTS)
    max_media_bytes: int = DEFAULT_MAX_BYTES
    max_media_pixels: int = DEFAULT_MAX_PIXELS
    # per video, reading and decoding both sources; 0 = no limit
    media_timeout_s: float = DEFAULT_TIMEOUT_S
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS


@dg.asset(
    partitions_def=daily,
    io_manager_key="lake_io",
    group_name="embeddings",
    pool="gpu",
    op_tags=K8S_EMBEDDINGS_TAGS,
    # A backfill embeds up to this many days per run: one pod and one encoder load for all of
    # them, still one lake file per day (the rows carry their day; the IO manager splits).
    backfill_policy=dg.BackfillPolicy.multi_run(EMBEDDINGS_PARTITIONS_PER_RUN),
    kinds={"pytorch", "parquet"},
    check_specs=[
        dg.AssetCheckSpec(
            "decode_error_share",
            asset="video_embeddings",
            blocking=True,
            description="Fails when too many videos' media are corrupt, refused or time out.",
        )
    ],
)
def video_embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingsConfig,
    lake: LakeResource,
    encoder: EncoderResource,
    device: DeviceResource,
    raw_videos: PartitionFiles,
):
    """Image embeddings of K frames sampled from each video (else its cover) mean-pooled, and
    the caption's text embedding, in the encoder's shared space, L2-normalised.

    A backfill run may cover several days (`context.partition_keys`): the encoder is loaded
    once for all of them, and each row keeps its day so that each day is its own lake file."""
    videos = raw_videos.read(
        ["video_id", "caption", "video_uri", "thumbnail_uri"], with_partition=True
    )
    row_days = videos.column(PARTITION_COLUMN)
    videos = videos.drop_columns([PARTITION_COLUMN])
    videos, truncated = truncate_captions(videos, config.max_caption_chars)
    enc = encoder.load(device)
    days = list(context.partition_keys)
    context.log.info(
        f"encoder {enc.ident} loaded once for {len(days)} day(s): {days[0]}..{days[-1]}"
    )
    described = enc.describe()
    flagged = [
        f"{modality} encoder {part['name']}@{part['version']}"
        for modality, part in described.items()
        if part["placeholder"]
    ]
    if flagged:
        context.log.warning(
            f"{', '.join(flagged)}: PLACEHOLDER weights (locally built, random) — the vectors "
            "carry no pretrained meaning; configure a trained checkpoint (blip_model / "
            "image_model / text_model on the encoder resource)"
        )
    started = time.monotonic()

    def progress(p: dict) -> None:
        context.log.info(
            f"embedded {p['done']}/{p['total']} videos, {p['videos_per_s']:.1f} videos/s, "
            f"ETA {p['eta_s']:.0f} s"
        )

    table = embed_videos(
        videos,
        enc,
        frames=encoder.frames,
        read_bytes=LakeMediaReader(lake.get_lake(), config.media_roots, config.max_media_bytes),
        limits=DecodeLimits(config.max_media_pixels, config.media_timeout_s or None),
        max_caption_chars=None,  # cut above, where the count is taken
        workers=encoder.decode_workers,
        progress=progress,
    )
    summary = media_summary(table.column("media_status").to_pylist(), row_days.to_pylist(), days)
    counts = summary.counts
    elapsed = time.monotonic() - started
    per_modality = {}  # e.g. image_encoder, image_encoder_version, image_placeholder
    for modality, part in described.items():
        per_modality[f"{modality}_encoder"] = part["name"]
        per_modality[f"{modality}_encoder_version"] = part["version"]
        per_modality[f"{modality}_placeholder"] = part["placeholder"]
    # Each day is judged alone: a multi-day run publishes only if every day passes.
    passed = all(s <= config.max_decode_error_share for s in summary.share_by_day.values())
    yield dg.Output(
        table.append_column(PARTITION_COLUMN, row_days),
        metadata={
            PUBLISH: passed,
            "videos": table.num_rows,
            "encoder": enc.ident,
            "encoder_version": enc.version,
            "placeholder_weights": enc.placeholder,
            **per_modality,
            "image_dim": enc.image_dim,
            "text_dim": enc.text_dim,
            "frames_per_video": encoder.frames,
            "image_px": enc.frame_size,
            "media_ok": counts["ok"],
            "media_missing": counts["no_media"],
            "media_decode_errors": counts["decode_error"],
            "media_refused": sum(n for s, n in counts.items() if s.startswith("refused")),
            "media_timeouts": counts["timeout"],
            "media_status_counts": {s: n for s, n in counts.items() if n},
            "captions_truncated": truncated,
            "videos_per_s": table.num_rows / elapsed if elapsed > 0 else 0.0,
        },
    )
    yield dg.AssetCheckResult(
        check_name="decode_error_share",
        passed=passed,
        metadata={
            "share": summary.error_share,
            "threshold": config.max_decode_error_share,
            **({"share_by_day": summary.share_by_day} if len(days) > 1 else {}),
        },
    )


defs = dg.Definitions(assets=[video_embeddings])
