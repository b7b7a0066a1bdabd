"""Evaluating a model on a local dataset (see `keras_egemma.evaluation.datasets`)."""

import numpy as np

from keras_egemma.evaluation.retrieval import retrieval_metrics
from keras_egemma.evaluation.sts import sts_metrics


def evaluate_retrieval(model, queries, corpus, qrels, dim=None, batch_size=32, verbose=False):
    """Ranks the whole corpus for every query; TREC metrics.

    Queries get the retrieval query prompt; documents the document prompt
    with their title (`title: none` without one).

    Args:
        model: an `EmbeddingGemma`.
        queries: `{query id: text}`.
        corpus: `{document id: (title or None, text)}` (or `{id: text}`).
        qrels: `{query id: {document id: grade}}`.
        dim: Matryoshka size, or `None` for the full size.

    Returns:
        `retrieval_metrics`' dict plus `"queries"` and `"documents"` counts.

    Example:
    ```python
    evaluate_retrieval(model, *load_retrieval_dataset("./my_dataset"), dim=256)
    ```
    """
    doc_ids = list(corpus)
    entries = [corpus[d] if isinstance(corpus[d], tuple) else (None, corpus[d]) for d in doc_ids]
    query_ids = [q for q in queries if q in qrels]
    if not query_ids:
        raise ValueError("No query has relevance judgements in `qrels`.")
    q = model.encode_query([queries[i] for i in query_ids], dim=dim, batch_size=batch_size,
                           verbose=verbose)
    d = model.encode_document([text for _, text in entries], titles=[t for t, _ in entries],
                              dim=dim, batch_size=batch_size, verbose=verbose)
    index = {doc: i for i, doc in enumerate(doc_ids)}
    relevant = [{index[doc]: grade for doc, grade in qrels[i].items()} for i in query_ids]
    metrics = retrieval_metrics(np.atleast_2d(q) @ np.atleast_2d(d).T, relevant)
    return {**metrics, "queries": len(query_ids), "documents": len(doc_ids)}


def evaluate_sts(model, sentences1, sentences2, scores, dim=None, task="STS", batch_size=32,
                 verbose=False):
    """Spearman / Pearson of the cosine of each pair against the gold scores.

    Example:
    ```python
    evaluate_sts(model, *load_sts_dataset("./my_dataset"))["spearman"]
    ```
    """
    a = model.encode(list(sentences1), task=task, dim=dim, batch_size=batch_size, verbose=verbose)
    b = model.encode(list(sentences2), task=task, dim=dim, batch_size=batch_size, verbose=verbose)
    return sts_metrics(np.atleast_2d(a), np.atleast_2d(b), scores)
