"""Semantic textual similarity: rank correlation of cosine and gold scores."""

import numpy as np


def _ranks(x):
    """1-based ranks, ties given their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    # Average the ranks within each group of equal values.
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x, y):
    """Spearman rank correlation (ties averaged), as `scipy.stats.spearmanr`.

    Example:
    ```python
    spearman([1, 2, 3], [1, 3, 2])   # 0.5
    ```
    """
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"Need two sequences of the same length >= 2; got {len(x)} and {len(y)}.")
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def sts_metrics(embeddings1, embeddings2, gold_scores):
    """Spearman and Pearson correlation between pair cosines and gold scores.

    Args:
        embeddings1, embeddings2: `(n, d)` embeddings of the two sides of
            each pair (any norm: the cosine is computed here).
        gold_scores: `(n,)` human similarity scores.

    Returns:
        dict: `"spearman"`, `"pearson"` (of the cosines) and `"n"`.

    Example:
    ```python
    a = model.encode(s1, task="STS"); b = model.encode(s2, task="STS")
    sts_metrics(a, b, gold)["spearman"]
    ```
    """
    a = np.asarray(embeddings1, np.float64)
    b = np.asarray(embeddings2, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != len(gold_scores):
        raise ValueError(
            f"Expected two (n, d) arrays and n gold scores; got {a.shape}, {b.shape} "
            f"and {len(gold_scores)}."
        )
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "spearman": spearman(cosine, gold_scores),
        "pearson": float(np.corrcoef(cosine, np.asarray(gold_scores, np.float64))[0, 1]),
        "n": len(gold_scores),
    }
