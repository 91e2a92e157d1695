"""Exact vs approximate related-video search: recall@k of the ANN index against exact search,
and the speed ratio. Figures only, never asserted.

The corpus is `--n` random-but-clustered unit vectors (`--clusters` random centres, Gaussian
spread), the shape of a CDML corpus; the queries are `--queries` corpus members (new videos
are part of their own 28-day corpus), each excluded from its own list, as in
`top_k_related`. It prints the exact search's ms/query, then for each index kind (`--kinds`:
faiss HNSW and IVF-Flat, see `AnnIndex`) its build time and, for each query-time setting
(`--ef-search` for HNSW, `--nprobe` for IVF):

  recall@k    mean |ANN top-k ∩ exact top-k| / k over the queries
  ms/query    exact (blocked matrix product + torch.topk) and ANN search
  speedup     exact ms/query / ANN ms/query
  day ratio   exact cost of a day (`--day-queries` queries) / (ANN build + the same searches)

    .venv/bin/python bench/related_search.py                      # 200k x 64, ~6 min
    .venv/bin/python bench/related_search.py --spread 1.6         # diffuse neighbourhoods
    .venv/bin/python bench/related_search.py --n 20000 --queries 500   # a quick smoke run

Needs faiss (PyPI faiss-cpu); the exact side runs without it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from vq_assets.core.related.search import AnnIndex, ann_top_k, exact_top_k  # noqa: E402


def clustered(n: int, dim: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    x = centres[rng.integers(0, clusters, n)] + noise
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed(fn, rounds: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=200_000, help="corpus size")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--clusters", type=int, default=2_000)
    p.add_argument("--spread", type=float, default=0.8, help="noise norm around a centre")
    p.add_argument("--queries", type=int, default=2_000, help="queries timed and scored")
    p.add_argument("--day-queries", type=int, default=200_000, help="queries of one day")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--m", type=int, default=32, help="HNSW graph degree")
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--kinds", default="hnsw,ivf", help="ANN index kinds to measure")
    p.add_argument("--ef-search", default="64,128,256", help="HNSW query beams")
    p.add_argument("--nprobe", default="8,32,128", help="IVF lists searched per query")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    corpus = clustered(args.n, args.dim, args.clusters, args.spread, args.seed)
    rows = np.random.default_rng(args.seed + 1).choice(args.n, args.queries, replace=False)
    queries = corpus[rows]
    print(
        f"corpus {args.n} x {args.dim} ({args.clusters} clusters, spread {args.spread}), "
        f"{args.queries} queries, k={args.k}"
    )

    exact_s, (_, exact_pos) = timed(
        lambda: exact_top_k(queries, corpus, args.k, self_position=rows), args.rounds
    )
    exact_ms = 1000 * exact_s / args.queries
    print(f"exact: {exact_ms:.3f} ms/query")

    day_exact_s = exact_ms / 1000 * args.day_queries
    print(f"a day of {args.day_queries} queries, exact: ~{day_exact_s:.0f} s")
    sweeps = {
        "hnsw": ("efSearch", "ef_search", args.ef_search),
        "ivf": ("nprobe", "nprobe", args.nprobe),
    }
    for kind in args.kinds.split(","):
        label, attr, values = sweeps[kind]
        build_start = time.perf_counter()
        index = AnnIndex(corpus, kind=kind, m=args.m, ef_construction=args.ef_construction)
        build_s = time.perf_counter() - build_start
        shape = (
            f"M={args.m}, efConstruction={args.ef_construction}"
            if kind == "hnsw"
            else f"nlist={index.index.nlist}"
        )
        print(f"\n{kind} ({shape}): build {build_s:.1f} s")
        print(f"{label:>9} {'recall@k':>9} {'ms/query':>9} {'speedup':>8} {'day ratio':>10}")
        for value in (int(v) for v in values.split(",")):
            setattr(index, attr, value)
            ann_s, (_, ann_pos) = timed(
                lambda index=index: ann_top_k(index, queries, args.k, self_position=rows),
                args.rounds,
            )
            ann_ms = 1000 * ann_s / args.queries
            hits = [
                len(set(a[a >= 0]) & set(e[e >= 0])) / args.k
                for a, e in zip(ann_pos, exact_pos, strict=True)
            ]
            # A day: one build, then every new video's search.
            day_ann_s = build_s + ann_ms / 1000 * args.day_queries
            print(
                f"{value:>9} {np.mean(hits):>9.4f} {ann_ms:>9.3f} {exact_ms / ann_ms:>7.1f}x "
                f"{day_exact_s / day_ann_s:>9.1f}x"
            )


if __name__ == "__main__":
    main()
