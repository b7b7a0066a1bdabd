"""Retrieval metrics from a query-by-document score matrix."""

import numpy as np


def retrieval_metrics(scores, relevant, ks=(1, 5, 10)):
    """nDCG@10, MRR@10 and recall@k for ranked retrieval with binary relevance.

    Args:
        scores: `(num_queries, num_documents)` similarities.
        relevant: for each query, the set (or list, or single int) of indices
            of its relevant documents.
        ks: cut-offs for recall.

    Returns:
        dict: `"ndcg@10"`, `"mrr@10"` and `"recall@{k}"` for each k, each the
        mean over queries (recall@k: the fraction of a query's relevant
        documents ranked in its top k).

    Example:
    ```python
    retrieval_metrics(q @ d.T, relevant=[{0}, {3, 4}])
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
    out = {"ndcg@10": [], "mrr@10": [], **{f"recall@{k}": [] for k in ks}}
    for row, rel in zip(ranking, relevant):
        rel = {int(rel)} if np.isscalar(rel) else {int(r) for r in rel}
        if not rel:
            raise ValueError("Every query needs at least one relevant document.")
        hits = np.array([doc in rel for doc in row[:10]], dtype=np.float64)
        ideal = discounts[: min(len(rel), 10)].sum()
        out["ndcg@10"].append(float((hits * discounts[: len(hits)]).sum() / ideal))
        first = np.flatnonzero(hits)
        out["mrr@10"].append(1.0 / (first[0] + 1) if first.size else 0.0)
        for k in ks:
            out[f"recall@{k}"].append(len(rel & set(row[:k].tolist())) / len(rel))
    return {name: float(np.mean(values)) for name, values in out.items()}
