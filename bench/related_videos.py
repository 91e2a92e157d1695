"""A day of `related_videos` at a 28-day corpus of 1M videos, projected from measured rates.

`related_videos[D]` embeds its whole corpus with the week's CDML tower (vectors of two weekly
towers are not comparable), then searches the top k for each of the day's new videos. This
measures, on this machine, the three rates that cost is made of, at `--n` videos:

  embed     content rows -> 64-d vectors through a CDML tower (the demo's input width)
  exact     ms per query of `top_k_related(method="exact")` at corpus n; it grows linearly
            with the corpus (a matrix product), checked by timing n/2 as well
  hnsw      faiss HNSW build time per vector and ms per query at corpus n

and projects a day at `--corpus` videos (28 days of them, so `--corpus / 28` new videos a day):
embed the corpus + exact search of the day's queries, against embed + HNSW build + search.

    .venv/bin/python bench/related_videos.py            # n = 200k, ~5 min on 2 cores
    .venv/bin/python bench/related_videos.py --n 50000  # a quick run

Figures only, never asserted by the tests.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from bench.related_search import clustered  # noqa: E402
from vq_assets.core.related.cdml import CDMLConfig, CDMLTower, embed  # noqa: E402
from vq_assets.core.related.search import AnnIndex, ann_top_k, top_k_related  # noqa: E402

# The demo's content width: placeholder BLIP image (256) + MiniLM text (384) + flags,
# log-duration and the language one-hot (content.content_dim).
DEMO_IN_DIM = 256 + 1 + 384 + 1 + 1 + 16


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=200_000, help="corpus measured")
    p.add_argument("--corpus", type=int, default=1_000_000, help="corpus projected (28 days)")
    p.add_argument("--queries", type=int, default=2_000, help="queries timed")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)

    tower = CDMLTower(CDMLConfig(in_dim=DEMO_IN_DIM))
    content = rng.standard_normal((args.n, DEMO_IN_DIM)).astype(np.float32)
    embed_rate = args.n / seconds(lambda: embed(tower, content))

    corpus = clustered(args.n, 64, 2_000, 1.2, 0)
    ids = [f"v{i}" for i in range(args.n)]
    rows = rng.choice(args.n, args.queries, replace=False)
    q_ids = [ids[i] for i in rows]

    def exact(n: int) -> float:
        return seconds(
            lambda: top_k_related(q_ids, corpus[rows], ids[:n], corpus[:n], args.k, method="exact")
        )

    half_ms = 1000 * exact(args.n // 2) / args.queries
    exact_ms = 1000 * exact(args.n) / args.queries
    build_s = seconds(lambda: setattr(main, "index", AnnIndex(corpus)))
    index = main.index  # type: ignore[attr-defined]
    hnsw_ms = 1000 * seconds(lambda: ann_top_k(index, corpus[rows], args.k)) / args.queries

    print(f"measured at n = {args.n:,} ({args.threads} threads), k = {args.k}")
    print(f"  embed            {embed_rate:>12,.0f} videos/s")
    print(
        f"  exact search     {exact_ms:>12.3f} ms/query  (n/2: {half_ms:.3f}, ratio "
        f"{exact_ms / half_ms:.2f}: linear in the corpus)"
    )
    print(f"  HNSW build       {1e6 * build_s / args.n:>12.1f} µs/vector")
    print(f"  HNSW search      {hnsw_ms:>12.3f} ms/query")

    n, q = args.corpus, args.corpus // 28
    scale = n / args.n
    embed_day = n / embed_rate
    exact_day = embed_day + q * exact_ms * scale / 1000
    # HNSW build grows a little faster than linearly (log n); linear is the optimistic side.
    hnsw_day = embed_day + build_s * scale + q * hnsw_ms / 1000
    print(f"\nprojected day: corpus {n:,}, {q:,} new videos")
    print(f"  embed the corpus {embed_day:>10.0f} s")
    print(f"  exact            {exact_day:>10.0f} s  ({exact_day / 60:.1f} min)")
    print(f"  HNSW             {hnsw_day:>10.0f} s  ({hnsw_day / 60:.1f} min, build optimistic)")
    print(f"  exact / HNSW     {exact_day / hnsw_day:>10.2f}x  (goal: under 60 min on this CPU)")


if __name__ == "__main__":
    main()
