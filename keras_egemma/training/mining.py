"""Hard-negative mining with the model itself.

The paper finetunes with one hard negative per query, weighted by how hard
it is (`keras_egemma.losses.nce`). `mine_hard_negatives` finds such
negatives by retrieving, for each query, the most similar documents of a
corpus with the model being trained, and keeps the false negatives (relevant
documents nobody labelled) out with a rank window and an optional margin.
"""

import warnings

import numpy as np

from keras_egemma.models.preprocessor import check_texts

# Query-by-document scores held in memory at once (float32: 64 MB).
_SCORES_PER_CHUNK = 1 << 24


def mine_hard_negatives(
    model,
    queries,
    positives,
    corpus=None,
    *,
    num_negatives=1,
    rank_window=(10, 50),
    margin=None,
    query_task="query",
    document_task="document",
    batch_size=32,
    seed=0,
    verbose="auto",
):
    """Mines hard negatives for (query, positive) pairs with `model` itself.

    Queries are embedded with the query prompt and the corpus with the
    document prompt; for each pair the corpus is ranked by cosine
    similarity to the query and a document is *eligible* as a negative
    unless it is

    - a positive of that query, by text (a query text that occurs in
      several pairs excludes all of its positives), or
    - when `margin` is set, scored above `sim(query, positive) - margin`.

    Ranks count eligible documents only (rank 0 is the most similar
    eligible one). `num_negatives` are sampled without replacement from
    ranks `rank_window[0]` to `rank_window[1] - 1`, or, with
    `rank_window=None`, the top `num_negatives` are taken. Negatives are
    listed hardest first.

    Why these defaults. The very top of a large corpus often holds relevant
    documents that were never labelled; training them as negatives teaches
    the model the wrong thing. `rank_window=(10, 50)` skips the ten nearest
    documents and stays within the fifty nearest, so the negatives remain
    hard; sampling rather than always taking the hardest varies the
    difficulty across examples. That suits corpora of thousands of
    documents or more; for a few hundred use a narrower window, e.g.
    `(3, 20)`, or `None` with a `margin`. `margin` (e.g. `0.05`, an
    absolute cosine difference) is off by default; set it to also drop
    near-duplicates of the positive wherever they rank.

    Args:
        model: an `EmbeddingGemma` (its `encode` embeds the texts).
        queries: list of n query strings.
        positives: list of n positive passages, one per query.
        corpus: list of candidate passages. Defaults to the positives (the
            other pairs' positives are the candidates). Duplicates are
            counted once.
        num_negatives: negatives per example (k).
        rank_window: `(start, stop)` ranks to sample from, with
            `stop - start >= num_negatives`, or `None` for the top k.
        margin: float >= 0, or `None` to keep every non-positive.
        query_task, document_task: prompt names for queries and passages
            (use the names `fit` will use).
        batch_size: texts per forward pass when embedding.
        seed: seed of the sampling within the window (`None`: random).
        verbose: progress bars of `encode` (`"auto"`, `True`, `False`).

    Returns:
        A list of `{"query": str, "positive": str, "negative": [k strs]}`
        in input order, ready for `model.fit`. Pairs with fewer than k
        eligible documents in the window are left out, with a warning.

    Memory: the corpus embeddings, `(len(corpus), embedding_dim)` float32,
    plus query-by-corpus scores in blocks of at most 2**24 (64 MB).

    Example:
    ```python
    examples = mine_hard_negatives(
        model, queries, positives, corpus=passages, num_negatives=1,
        rank_window=(10, 50), margin=0.05,
    )
    model.compile()
    model.fit(examples, batch_size=32)
    ```
    """
    queries, _ = check_texts(queries, "queries")
    positives, _ = check_texts(positives, "positives")
    if len(queries) != len(positives):
        raise ValueError(
            f"Got {len(queries)} queries and {len(positives)} positives; pass "
            "one positive per query."
        )
    corpus = positives if corpus is None else check_texts(corpus, "corpus")[0]
    corpus = list(dict.fromkeys(corpus))
    start, stop = _check_options(num_negatives, rank_window, margin)

    # Every positive of a query text is excluded for it, not only the pair's.
    positives_of = {}
    for query, positive in zip(queries, positives):
        positives_of.setdefault(query, set()).add(positive)
    in_corpus = set(corpus)
    documents = list(corpus)
    if margin is not None:
        # The margin needs every positive's score, in the corpus or not.
        documents += [p for p in dict.fromkeys(positives) if p not in in_corpus]
    document_row = {text: i for i, text in enumerate(documents)}
    unique_queries = list(dict.fromkeys(queries))
    query_row = {text: i for i, text in enumerate(unique_queries)}
    # `encode` returns unit vectors: dot products are cosine similarities.
    query_embeddings = model.encode(
        unique_queries, task=query_task, batch_size=batch_size, verbose=verbose
    )
    document_embeddings = model.encode(
        documents, task=document_task, batch_size=batch_size, verbose=verbose
    )
    candidates = document_embeddings[: len(corpus)]

    rng = np.random.default_rng(seed)
    pairs = list(zip(queries, positives))
    chunk = max(1, _SCORES_PER_CHUNK // len(corpus))
    examples, left_out = [], 0
    for begin in range(0, len(pairs), chunk):
        block = pairs[begin : begin + chunk]
        embedded = query_embeddings[[query_row[query] for query, _ in block]]
        scores = embedded @ candidates.T
        for (query, positive), query_vector, row in zip(block, embedded, scores):
            eligible = np.ones(len(corpus), dtype=bool)
            for text in positives_of[query] & in_corpus:
                eligible[document_row[text]] = False
            if margin is not None:
                positive_score = query_vector @ document_embeddings[document_row[positive]]
                eligible &= row <= positive_score - margin
            window = _rank(np.flatnonzero(eligible), row, stop)[start:stop]
            if len(window) < num_negatives:
                left_out += 1
                continue
            if rank_window is not None:
                picked = rng.choice(len(window), num_negatives, replace=False)
                window = window[np.sort(picked)]
            examples.append(
                {
                    "query": query,
                    "positive": positive,
                    "negative": [corpus[i] for i in window],
                }
            )
    if left_out:
        where = "at the top" if rank_window is None else f"in ranks [{start}, {stop})"
        warnings.warn(
            f"{left_out} of {len(queries)} pairs had fewer than {num_negatives} "
            f"eligible negatives {where} and were left out. Use a larger corpus, "
            "a wider or earlier `rank_window`, a smaller `margin` or fewer "
            "`num_negatives`.",
            stacklevel=2,
        )
    return examples


def _rank(indices, scores, depth):
    """The `depth` best of `indices` by `scores`, best first (ties: lower index)."""
    if len(indices) > depth:
        # A partial sort: a corpus can be far larger than the window.
        indices = indices[np.argpartition(-scores[indices], depth - 1)[:depth]]
    return indices[np.lexsort((indices, -scores[indices]))]


def _check_options(num_negatives, rank_window, margin):
    """Validates the mining options; returns the window as `(start, stop)`."""
    if not isinstance(num_negatives, int) or num_negatives < 1:
        raise ValueError(f"`num_negatives` must be a positive int, got {num_negatives!r}.")
    if margin is not None and (not isinstance(margin, (int, float)) or margin < 0):
        raise ValueError(
            f"`margin` must be a number >= 0 (a cosine difference) or None, got {margin!r}."
        )
    if rank_window is None:
        return 0, num_negatives
    try:
        start, stop = (int(r) for r in rank_window)
    except (TypeError, ValueError):
        raise ValueError(
            f"`rank_window` must be a pair (start, stop) of ranks or None, got "
            f"{rank_window!r}."
        ) from None
    if not 0 <= start < stop or stop - start < num_negatives:
        raise ValueError(
            f"`rank_window` {rank_window!r} must satisfy 0 <= start < stop and hold at "
            f"least num_negatives={num_negatives} ranks (stop - start >= "
            f"{num_negatives})."
        )
    return start, stop
