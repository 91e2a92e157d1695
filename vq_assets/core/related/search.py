"""Nearest-neighbour search for `related_videos` (DESIGN §11): exact while the corpus fits,
an approximate index (faiss: HNSW, or IVF) above that.

Vectors are compared by inner product, which is cosine similarity for the unit vectors CDML
makes. Exact search is a blocked matrix product: queries go in blocks sized so that one block's
scores stay under `memory_bytes`, and `torch.topk` picks each row's top k without sorting the
whole row. The approximate path builds an HNSW graph with
faiss (`faiss-cpu`), imported only when used, so the exact path works without it;
bench/related_search.py measures its recall against exact search.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

Method = Literal["exact", "ann", "auto"]

DEFAULT_K = 50
# `auto` searches exactly up to this many candidates (256 MiB of 64-d vectors per million).
# A day's queries are the day's new videos, about 1/28 of the corpus: at 1M candidates
# (35.7k queries) exact search takes ~2 min on 2 cores against ~8 min for an HNSW build plus
# its searches (bench/related_videos.py), so the index pays only at several million.
EXACT_MAX_CORPUS = 4_000_000
DEFAULT_MEMORY_BYTES = 256 * 2**20

RELATED_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("related_video_id", pa.string()),
        ("rank", pa.int32()),  # 1 = most related
        ("score", pa.float32()),  # inner product (cosine for unit vectors)
    ]
)

FAISS_HINT = (
    "approximate search needs faiss (PyPI package faiss-cpu, e.g. faiss-cpu==1.15.1); "
    "install it, or search with method='exact'"
)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as err:  # a clear message instead of a bare ModuleNotFoundError
        raise ImportError(FAISS_HINT) from err
    return faiss


def _as_matrix(vecs: np.ndarray, name: str) -> np.ndarray:
    out = np.ascontiguousarray(vecs, dtype=np.float32)
    if out.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, d], got shape {out.shape}")
    return out


def _first_valid(scores: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Each row's first k entries whose position is not -1, order kept; -1 pads short rows."""
    order = np.argsort(positions < 0, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(scores, order, axis=1), np.take_along_axis(positions, order, axis=1))


def exact_top_k(
    query_vecs: np.ndarray,
    corpus_vecs: np.ndarray,
    k: int,
    *,
    self_position: np.ndarray | None = None,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k corpus rows by inner product for each query.

    query_vecs [q, d], corpus_vecs [c, d]; `self_position` [q] is each query's own row in the
    corpus (-1 when it is not there), never returned. Returns scores [q, min(k, c)] float32,
    best first, and positions [q, min(k, c)] int64, -1 where a row has fewer candidates.
    Within a row, equal scores are ordered by corpus position (which of several candidates
    tied at the k-th place gets in is up to topk).
    """
    queries, corpus = _as_matrix(query_vecs, "query_vecs"), _as_matrix(corpus_vecs, "corpus_vecs")
    n_q, n_c = len(queries), len(corpus)
    kk = min(k, n_c)
    scores = np.full((n_q, kk), -np.inf, np.float32)
    positions = np.full((n_q, kk), -1, np.int64)
    if kk == 0 or n_q == 0:
        return scores, positions
    # torch's topk is a multi-threaded partial selection, ~20x faster than numpy's
    # argpartition on 200k-wide rows; the score block is the only big allocation.
    block = max(1, memory_bytes // (4 * n_c))
    corpus_t = torch.from_numpy(corpus)
    for start in range(0, n_q, block):
        stop = min(start + block, n_q)
        s = torch.from_numpy(queries[start:stop]) @ corpus_t.T  # [b, c]
        if self_position is not None:
            rows = np.flatnonzero(self_position[start:stop] >= 0)
            s[torch.from_numpy(rows), torch.from_numpy(self_position[start:stop][rows])] = -np.inf
        top_t, part_t = torch.topk(s, kk, dim=1)
        top, part = top_t.numpy(), part_t.numpy().astype(np.int64)
        order = np.lexsort((part, -top), axis=1)  # score descending, then position
        scores[start:stop] = np.take_along_axis(top, order, axis=1)
        positions[start:stop] = np.take_along_axis(part, order, axis=1)
    positions[~np.isfinite(scores)] = -1  # only the excluded self scores -inf
    return _first_valid(scores, positions, kk)


class AnnIndex:
    """An approximate inner-product index (faiss) over corpus vectors [c, d].

    kind="hnsw" (default): an HNSW graph (`IndexHNSWFlat`). `m` is the graph degree,
    `ef_construction` the build-time beam, `ef_search` the query-time beam (raised to at least
    k): high recall even where neighbourhoods are diffuse, but a slow build.
    kind="ivf": an inverted file (`IndexIVFFlat`): k-means into `nlist` lists (default
    4 sqrt(c)), `nprobe` of them searched per query. Builds ~10x faster and searches batches
    fast where the vectors are well clustered; its recall drops where they are not
    (bench/related_search.py measures both).
    """

    def __init__(
        self,
        vectors: np.ndarray,
        *,
        kind: Literal["hnsw", "ivf"] = "hnsw",
        m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 16,
    ) -> None:
        faiss = _faiss()
        data = _as_matrix(vectors, "vectors")
        self.size, self.dim = data.shape
        self.kind, self.ef_search, self.nprobe = kind, ef_search, nprobe
        if kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(self.dim, m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = ef_construction
        elif kind == "ivf":
            # k-means wants ~40 points per list; a small corpus gets fewer lists.
            lists = nlist or int(4 * np.sqrt(max(self.size, 1)))
            lists = max(1, min(lists, self.size // 40))
            self._quantizer = faiss.IndexFlatIP(self.dim)  # kept: the index does not own it
            self.index = faiss.IndexIVFFlat(
                self._quantizer, self.dim, lists, faiss.METRIC_INNER_PRODUCT
            )
            if self.size:
                sample = np.random.default_rng(0).permutation(self.size)[: 64 * lists]
                self.index.train(data[np.sort(sample)])
        else:
            raise ValueError(f"kind must be 'hnsw' or 'ivf', got {kind!r}")
        if self.size:
            self.index.add(data)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """scores [q, k] float32 and positions [q, k] int64 (-1 where nothing was found)."""
        q = _as_matrix(queries, "queries")
        if self.size == 0 or len(q) == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.ef_search, k)
        else:
            self.index.nprobe = min(self.nprobe, self.index.nlist)
        scores, positions = self.index.search(q, k)
        return scores.astype(np.float32), positions.astype(np.int64)


def ann_top_k(
    index: AnnIndex, query_vecs: np.ndarray, k: int, *, self_position: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`exact_top_k`'s contract, answered approximately by `index`: one extra neighbour is
    asked for so that dropping the query itself still leaves k."""
    kk = min(k, index.size)
    extra = 1 if self_position is not None else 0
    scores, positions = index.search(query_vecs, min(kk + extra, index.size))
    if self_position is not None:
        positions = np.where(positions == self_position[:, None], -1, positions)
    scores = np.where(positions < 0, -np.inf, scores).astype(np.float32)
    return _first_valid(scores, positions, kk)


def _resolve(method: Method, n_corpus: int, exact_max_corpus: int) -> Literal["exact", "ann"]:
    if method == "auto":
        return "exact" if n_corpus <= exact_max_corpus else "ann"
    if method not in ("exact", "ann"):
        raise ValueError(f"method must be 'exact', 'ann' or 'auto', got {method!r}")
    return method


def top_k_related(
    query_ids: Sequence[str],
    query_vecs: np.ndarray,
    corpus_ids: Sequence[str],
    corpus_vecs: np.ndarray,
    k: int = DEFAULT_K,
    *,
    exclude_ids: Iterable[str] = (),
    method: Method = "auto",
    exact_max_corpus: int = EXACT_MAX_CORPUS,
    ann_params: dict[str, Any] | None = None,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> pa.Table:
    """The k most related corpus videos of each query video (RELATED_SCHEMA rows).

    A query never gets itself (matched by id) nor any of `exclude_ids` (the guardrails:
    flagged videos); a query gets fewer than k rows only when fewer candidates exist (or, on
    the ANN path, rarely, when the graph returns fewer). `method="auto"` is exact up to
    `exact_max_corpus` eligible candidates and approximate above; `ann_params` go to AnnIndex.
    Rows come ordered by query, then rank.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q_vecs, c_vecs = _as_matrix(query_vecs, "query_vecs"), _as_matrix(corpus_vecs, "corpus_vecs")
    if len(q_vecs) != len(query_ids) or len(c_vecs) != len(corpus_ids):
        raise ValueError("ids and vectors must have the same number of rows")
    if len(q_vecs) and len(c_vecs) and q_vecs.shape[1] != c_vecs.shape[1]:
        raise ValueError(f"query dim {q_vecs.shape[1]} != corpus dim {c_vecs.shape[1]}")
    corpus_arr = pa.array(list(corpus_ids), pa.string())
    if pc.count_distinct(corpus_arr).as_py() != len(corpus_arr):
        raise ValueError("corpus_ids must be unique")
    excluded = pa.array(list(set(exclude_ids)), pa.string())
    keep = np.asarray(pc.invert(pc.is_in(corpus_arr, excluded)).to_numpy(zero_copy_only=False))
    eligible = corpus_arr.filter(pa.array(keep))
    c_vecs = c_vecs[keep]

    query_arr = pa.array(list(query_ids), pa.string())
    self_position = pc.fill_null(pc.index_in(query_arr, eligible), -1).to_numpy()
    self_position = np.asarray(self_position, np.int64)
    if _resolve(method, len(eligible), exact_max_corpus) == "exact":
        scores, positions = exact_top_k(
            q_vecs, c_vecs, k, self_position=self_position, memory_bytes=memory_bytes
        )
    else:
        index = AnnIndex(c_vecs, **(ann_params or {}))
        scores, positions = ann_top_k(index, q_vecs, k, self_position=self_position)
    return related_table(query_arr, eligible, scores, positions)


def related_table(
    query_ids: pa.Array, corpus_ids: pa.Array, scores: np.ndarray, positions: np.ndarray
) -> pa.Table:
    """RELATED_SCHEMA rows from top-k results: row i of `positions` belongs to query i."""
    n_q, kk = positions.shape
    flat = positions.reshape(-1)
    found = flat >= 0
    query_rows = np.repeat(np.arange(n_q), kk)[found]
    ranks = np.tile(np.arange(1, kk + 1, dtype=np.int32), n_q)[found]
    return pa.table(
        [
            query_ids.take(pa.array(query_rows)),
            corpus_ids.take(pa.array(flat[found])),
            pa.array(ranks, pa.int32()),
            pa.array(scores.reshape(-1)[found], pa.float32()),
        ],
        schema=RELATED_SCHEMA,
    )
