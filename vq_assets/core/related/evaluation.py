"""How good are related lists? Offline metrics on held-out days (DESIGN §11).

For the videos created on a held-out day D (the queries), the eligible candidates are the
videos created in the 28 days up to D less the flagged ones; the truth is the co-watch that
happened later (`cowatch_pairs` of the held-out event days). Any vectors can be compared the
same way: CDML, the raw content features by cosine, random vectors (the floor).

- recall@k: |top-k ∩ co-watched| / |co-watched|, per query, averaged;
- nDCG@k: binary gains, or the number of co-watching users when `graded`;
- same-topic share: of the top-k rows, the share whose related video has the query's topic
  (the simulator knows each video's hidden topic).

Queries with no realised co-watch among their candidates do not count, and are reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vq_assets.core.lake.sql import connect
from vq_assets.core.related.search import top_k_related

REALISED_SCHEMA = pa.schema(
    [("video_id", pa.string()), ("related_video_id", pa.string()), ("gain", pa.float64())]
)
METRICS_SCHEMA = pa.schema(
    [
        ("method", pa.string()),
        ("k", pa.int32()),
        ("recall", pa.float64()),
        ("ndcg", pa.float64()),
        ("queries", pa.int64()),
        ("queries_without_cowatch", pa.int64()),
        ("same_topic_share", pa.float64()),  # NaN without topics
    ]
)


@dataclass(frozen=True)
class RetrievalMetrics:
    recall: float
    ndcg: float
    queries: int  # queries with at least one realised co-watch among their candidates
    queries_without_cowatch: int


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def random_vectors(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """The floor: [n, dim] unit vectors that know nothing."""
    return l2_normalise(np.random.default_rng(seed).standard_normal((n, dim)))


def realised_cowatch(
    pairs: pa.Table,
    query_ids: Iterable[str],
    candidate_ids: Iterable[str],
    *,
    exclude_ids: Iterable[str] = (),
) -> pa.Table:
    """REALISED_SCHEMA: (query, candidate, users) for each co-watch pair (`cowatch_pairs` rows
    of the held-out event days, summed) with one side a query and the other an eligible
    candidate; both orientations, since a pair is stored once as video_a < video_b."""
    summed = pairs.group_by(["video_a", "video_b"]).aggregate([("users", "sum")])
    a, b = summed.column("video_a"), summed.column("video_b")
    gain = pc.cast(summed.column("users_sum"), pa.float64())
    both = pa.table(
        {
            "video_id": pa.concat_arrays([a.combine_chunks(), b.combine_chunks()]),
            "related_video_id": pa.concat_arrays([b.combine_chunks(), a.combine_chunks()]),
            "gain": pa.concat_arrays([gain.combine_chunks(), gain.combine_chunks()]),
        }
    )
    queries = pa.array(list(set(query_ids)), pa.string())
    eligible = pa.array(list(set(candidate_ids) - set(exclude_ids)), pa.string())
    keep = pc.and_(
        pc.is_in(both.column("video_id"), queries),
        pc.is_in(both.column("related_video_id"), eligible),
    )
    return both.filter(keep).cast(REALISED_SCHEMA)


def retrieval_metrics(
    related: pa.Table, realised: pa.Table, k: int = 20, *, graded: bool = False
) -> RetrievalMetrics:
    """recall@k and nDCG@k of `related` (RELATED_SCHEMA rows) against `realised`
    (REALISED_SCHEMA). Queries are those of `related`; only the ones with a realised pair
    count. NaN when none has."""
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    gain = "gain" if graded else "1.0"
    con = connect()
    con.register("related", related.select(["video_id", "related_video_id", "rank"]))
    con.register("realised", realised)
    row = con.sql(
        f"""
        WITH truth AS (
            SELECT r.video_id, r.related_video_id, {gain} AS g FROM realised r
            WHERE r.video_id IN (SELECT video_id FROM related)
        ),
        ideal AS (
            SELECT video_id, count(*) AS n_true,
                   sum(g / log2(pos + 1)) FILTER (WHERE pos <= {k}) AS idcg
            FROM (SELECT *, row_number() OVER (PARTITION BY video_id ORDER BY g DESC) AS pos
                  FROM truth)
            GROUP BY video_id
        ),
        got AS (
            SELECT t.video_id, count(*) AS hits, sum(t.g / log2(l.rank + 1)) AS dcg
            FROM related l JOIN truth t USING (video_id, related_video_id)
            WHERE l.rank <= {k}
            GROUP BY t.video_id
        )
        SELECT avg(coalesce(got.hits, 0) / i.n_true) AS recall,
               avg(coalesce(got.dcg, 0) / i.idcg) AS ndcg,
               count(*) AS queries,
               (SELECT count(DISTINCT video_id) FROM related) - count(*) AS without
        FROM ideal i LEFT JOIN got USING (video_id)
        """
    ).fetchall()[0]
    con.close()
    recall, ndcg, queries, without = row
    return RetrievalMetrics(
        recall=float("nan") if recall is None else float(recall),
        ndcg=float("nan") if ndcg is None else float(ndcg),
        queries=int(queries),
        queries_without_cowatch=int(without),
    )


def compare_methods(
    video_ids: Sequence[str],
    vectors: Mapping[str, np.ndarray],
    groups: Sequence[tuple[np.ndarray, np.ndarray]],
    pairs: pa.Table,
    *,
    k: int = 20,
    exclude_ids: Iterable[str] = (),
    graded: bool = False,
    topics: Mapping[str, str | None] | None = None,
) -> pa.Table:
    """METRICS_SCHEMA, one row per method of `vectors` ({name: [n, d]}, rows of `video_ids`;
    each is L2-normalised, so raw content is compared by cosine). With `topics` (video id ->
    topic, the simulator's truth), the same-topic share of each method's top k.

    `groups` holds one (query rows, candidate rows) per held-out day, so that each day's
    queries are ranked among that day's eligible candidates; `pairs` are the held-out
    `cowatch_pairs`. Exact search, since evaluation must not measure the ANN's misses.
    """
    ids = np.asarray(list(video_ids), dtype=object)
    excluded = set(exclude_ids)
    related_parts, realised_parts = [], []
    for q_rows, c_rows in groups:
        realised_parts.append(
            realised_cowatch(pairs, ids[q_rows], ids[c_rows], exclude_ids=excluded)
        )
    realised = pa.concat_tables(realised_parts) if realised_parts else REALISED_SCHEMA.empty_table()
    rows = []
    for name, vecs in vectors.items():
        unit = l2_normalise(vecs)
        related_parts = [
            top_k_related(
                list(ids[q]),
                unit[q],
                list(ids[c]),
                unit[c],
                k,
                exclude_ids=excluded,
                method="exact",
            )
            for q, c in groups
        ]
        related = pa.concat_tables(related_parts)
        m = retrieval_metrics(related, realised, k, graded=graded)
        rows.append(
            {
                "method": name,
                "k": k,
                "recall": m.recall,
                "ndcg": m.ndcg,
                "queries": m.queries,
                "queries_without_cowatch": m.queries_without_cowatch,
                "same_topic_share": (
                    same_topic_share(related, topics, k) if topics else float("nan")
                ),
            }
        )
    return pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)


def same_topic_share(related: pa.Table, topics: Mapping[str, str | None], k: int = 20) -> float:
    """Share of `related` rows with rank <= k whose related video has the query's topic; rows
    where either topic is unknown do not count. NaN when no row counts."""
    top = related.filter(pc.less_equal(related.column("rank"), k))
    q = [topics.get(v) for v in top.column("video_id").to_pylist()]
    r = [topics.get(v) for v in top.column("related_video_id").to_pylist()]
    known = [(a, b) for a, b in zip(q, r, strict=True) if a is not None and b is not None]
    if not known:
        return float("nan")
    return float(np.mean([a == b for a, b in known]))
