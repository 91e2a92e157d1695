"""Exact top-k against a brute-force reference; guardrails; the ANN path where faiss exists."""

import builtins

import numpy as np
import pyarrow as pa
import pytest

from vq_assets.core.related import search
from vq_assets.core.related.search import RELATED_SCHEMA, exact_top_k, top_k_related


def unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(q_ids, q, c_ids, c, k, exclude) -> dict[str, list[str]]:
    """Full sort of every score row, by plain Python."""
    out = {}
    for qid, vec in zip(q_ids, q, strict=True):
        scored = [
            (-float(vec @ cv), cid)
            for cid, cv in zip(c_ids, c, strict=True)
            if cid != qid and cid not in exclude
        ]
        out[qid] = [cid for _, cid in sorted(scored)[:k]]
    return out


def as_lists(table: pa.Table) -> dict[str, list[str]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for r in table.to_pylist():
        out.setdefault(r["video_id"], []).append((r["rank"], r["related_video_id"]))
    for ranks in out.values():
        assert [r for r, _ in ranks] == list(range(1, len(ranks) + 1))
    return {q: [c for _, c in sorted(v)] for q, v in out.items()}


@pytest.mark.parametrize("memory_bytes", [64, 4 * 300 * 7, 1 << 28])  # 1 row, 7 rows, all
def test_exact_equals_brute_force_and_excludes_self_and_flagged(memory_bytes):
    rng = np.random.default_rng(0)
    corpus_ids = [f"c{i:03d}" for i in range(300)]
    corpus = unit(rng, 300)
    # Half the queries are corpus videos (created today, so in the 28-day corpus), half new.
    query_ids = corpus_ids[:20] + [f"q{i}" for i in range(20)]
    queries = np.vstack([corpus[:20], unit(rng, 20)])
    flagged = {"c005", "c100", "c101", "nope"}
    table = top_k_related(
        query_ids,
        queries,
        corpus_ids,
        corpus,
        k=10,
        exclude_ids=flagged,
        method="exact",
        memory_bytes=memory_bytes,
    )
    assert table.schema == RELATED_SCHEMA
    got = as_lists(table)
    assert got == brute_force(query_ids, queries, corpus_ids, corpus, 10, flagged)
    for r in table.to_pylist():
        assert r["related_video_id"] != r["video_id"]
        assert r["related_video_id"] not in flagged
        expected = float(
            queries[query_ids.index(r["video_id"])]
            @ corpus[corpus_ids.index(r["related_video_id"])]
        )
        assert r["score"] == pytest.approx(expected, abs=1e-5)


def test_fewer_candidates_than_k():
    rng = np.random.default_rng(1)
    ids = ["a", "b", "c"]
    vecs = unit(rng, 3)
    table = top_k_related(ids, vecs, ids, vecs, k=50, exclude_ids={"c"}, method="exact")
    got = as_lists(table)
    # A flagged video is never a candidate, but may still ask for its own list.
    assert got["a"] == ["b"] and got["b"] == ["a"] and sorted(got["c"]) == ["a", "b"]
    assert len(table) == 4
    empty = top_k_related(["x"], vecs[:1], [], np.zeros((0, 16), np.float32), k=5)
    assert empty.num_rows == 0


def test_ties_are_broken_by_corpus_position():
    vecs = np.tile(np.eye(4, dtype=np.float32)[:1], (6, 1))  # six identical vectors
    scores, positions = exact_top_k(vecs[:1], vecs, 6, self_position=np.array([0]))
    assert positions.tolist() == [[1, 2, 3, 4, 5, -1]]
    assert np.allclose(scores[0, :5], 1.0) and np.isneginf(scores[0, 5])


def test_refuses_bad_input():
    v = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="unique"):
        top_k_related(["a"], v[:1], ["x", "x"], v, k=1)
    with pytest.raises(ValueError, match="k must be"):
        top_k_related(["a"], v[:1], ["x", "y"], v, k=0)
    with pytest.raises(ValueError, match="method"):
        top_k_related(["a"], v[:1], ["x", "y"], v, k=1, method="fast")
    with pytest.raises(ValueError, match="dim"):
        top_k_related(["a"], np.zeros((1, 3), np.float32), ["x", "y"], v, k=1)


def test_ann_without_faiss_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    v = unit(np.random.default_rng(2), 5)
    ids = list("abcde")
    with pytest.raises(ImportError, match="faiss-cpu"):
        top_k_related(ids, v, ids, v, k=2, method="ann")
    # auto stays exact (and needs no faiss) while the corpus is under the threshold.
    assert top_k_related(ids, v, ids, v, k=2, method="auto").num_rows == 10
    with pytest.raises(ImportError, match="faiss-cpu"):
        top_k_related(ids, v, ids, v, k=2, method="auto", exact_max_corpus=4)


def clustered(rng: np.random.Generator, n: int, d: int, clusters: int) -> np.ndarray:
    centres = unit(rng, clusters, d)
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_matches_exact_closely_and_keeps_the_guardrails(kind):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    corpus = clustered(rng, 3000, 32, 40)
    ids = [f"v{i}" for i in range(3000)]
    q_ids, q = ids[:200], corpus[:200]
    flagged = set(ids[200:260])
    exact = as_lists(
        top_k_related(q_ids, q, ids, corpus, k=20, exclude_ids=flagged, method="exact")
    )
    ann_table = top_k_related(
        q_ids, q, ids, corpus, k=20, exclude_ids=flagged, method="ann", ann_params={"kind": kind}
    )
    ann = as_lists(ann_table)
    recall = np.mean([len(set(ann[x]) & set(exact[x])) / 20 for x in q_ids])
    assert recall > 0.95
    for r in ann_table.to_pylist():
        assert r["related_video_id"] != r["video_id"] and r["related_video_id"] not in flagged
    scores = ann_table.column("score").to_numpy()
    ranks = ann_table.column("rank").to_numpy()
    assert np.all(np.diff(scores)[np.diff(ranks) > 0] <= 1e-6)  # best first within a query


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_index_contract_on_tiny_corpora(kind):
    pytest.importorskip("faiss")
    v = unit(np.random.default_rng(4), 3)
    index = search.AnnIndex(v, kind=kind)
    scores, positions = search.ann_top_k(index, v, 5, self_position=np.arange(3))
    assert positions.shape == (3, 3)
    assert all(set(row[row >= 0]) == {0, 1, 2} - {i} for i, row in enumerate(positions))
    assert np.isneginf(scores[:, -1]).all()
