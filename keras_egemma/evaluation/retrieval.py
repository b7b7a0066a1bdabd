"""Retrieval metrics from a query-by-document score matrix."""

import numpy as np


def _grades(rel):
    """A query's relevance judgements as `{document index: grade}`."""
    if isinstance(rel, dict):
        return {int(doc): float(grade) for doc, grade in rel.items()}
    if np.isscalar(rel):
        return {int(rel): 1.0}
    return {int(doc): 1.0 for doc in rel}


def retrieval_metrics(scores, relevant, ks=(1, 5, 10)):
    """nDCG@10, MRR@10, MAP and recall@k for ranked retrieval.

    The definitions are TREC's (`trec_eval` / `pytrec_eval`, against which
    the tests check them): nDCG@10 with gain equal to the relevance grade
    and discount `1 / log2(rank + 1)`, normalised by the ideal ranking of
    the judged documents; MRR@10, the reciprocal rank of the first relevant
    document in the top 10 (0 if none); MAP, the mean over relevant
    documents of the precision at each one's rank, over the whole ranking;
    recall@k, the fraction of relevant documents in the top k. A document
    is relevant when its grade is > 0.

    Args:
        scores: `(num_queries, num_documents)` similarities.
        relevant: for each query, its relevant documents: an int, a set or
            list of indices (grade 1), or a dict `{index: grade}`.
        ks: cut-offs for recall.

    Returns:
        dict: `"ndcg@10"`, `"mrr@10"`, `"map"` and `"recall@{k}"` for each
        k, each the mean over queries.

    Example:
    ```python
    retrieval_metrics(q @ d.T, relevant=[{0}, {3, 4}])
    retrieval_metrics(q @ d.T, relevant=[{0: 2, 1: 1}, {3: 1}])   # graded
    ```
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or len(relevant) != scores.shape[0]:
        raise ValueError(
            f"`scores` must be (num_queries, num_documents) with one entry of "
            f"`relevant` per query; got {scores.shape} and {len(relevant)}."
        )
    # Ties broken by document index, so results are deterministic.
    ranking = np.argsort(-scores, axis=1, kind="stable")
    discounts = 1.0 / np.log2(np.arange(2, 12))
    out = {"ndcg@10": [], "mrr@10": [], "map": [], **{f"recall@{k}": [] for k in ks}}
    for row, rel in zip(ranking, relevant):
        grades = {doc: g for doc, g in _grades(rel).items() if g > 0}
        if not grades:
            raise ValueError("Every query needs at least one relevant document (grade > 0).")
        gains = np.array([grades.get(doc, 0.0) for doc in row[:10]])
        ideal = np.sort(list(grades.values()))[::-1][:10]
        out["ndcg@10"].append(float((gains * discounts[: len(gains)]).sum()
                                    / (ideal * discounts[: len(ideal)]).sum()))
        first = np.flatnonzero(gains > 0)
        out["mrr@10"].append(1.0 / (first[0] + 1) if first.size else 0.0)
        hit_ranks = np.flatnonzero(np.isin(row, list(grades))) + 1
        out["map"].append(float((np.arange(1, len(hit_ranks) + 1) / hit_ranks).sum()
                                / len(grades)))
        for k in ks:
            out[f"recall@{k}"].append(len(grades.keys() & set(row[:k].tolist())) / len(grades))
    return {name: float(np.mean(values)) for name, values in out.items()}
