"""Exact search over a float or compressed corpus, with rescoring of the top candidates."""

import numpy as np

from keras_egemma.quantization.embedding_quantization import PRECISIONS
from keras_egemma.quantization.embedding_quantization import dequantize_embeddings

# The dtype a corpus of each precision holds (what `quantize_embeddings` returns).
CORPUS_DTYPES = {
    "float32": None,  # any float dtype
    "int8": np.int8,
    "uint8": np.uint8,
    "binary": np.int8,
    "ubinary": np.uint8,
}
BINARY = ("binary", "ubinary")
# Corpus rows scored at a time: bounds the float32 copy of a chunk of a
# compressed corpus (16,384 x 768 x 4 bytes = 48 MiB).
CHUNK_ROWS = 16384


def _unit_queries(queries):
    queries = np.asarray(queries)
    if queries.dtype.kind != "f":
        raise ValueError(
            f"`queries` must be float embeddings (the model's output), got dtype {queries.dtype}: "
            "search compares float queries with the corpus, so do not quantize them."
        )
    if queries.ndim not in (1, 2) or queries.shape[-1] == 0 or not np.all(np.isfinite(queries)):
        raise ValueError(
            f"`queries` must be a finite (num_queries, dim) or (dim,) array, got shape "
            f"{queries.shape}."
        )
    queries = np.atleast_2d(queries).astype(np.float32)
    norms = np.linalg.norm(queries, axis=1, keepdims=True)
    return queries / np.maximum(norms, 1e-12)


def _check_corpus(corpus, precision, dim):
    expected = CORPUS_DTYPES[precision]
    if (expected is None and corpus.dtype.kind != "f") or (
        expected is not None and corpus.dtype != expected
    ):
        wanted = "a float dtype" if expected is None else np.dtype(expected).name
        raise ValueError(
            f"A {precision} corpus holds {wanted}, got {corpus.dtype}: pass the `precision` "
            "that `quantize_embeddings` compressed it to."
        )
    width = -(-dim // 8) if precision in BINARY else dim
    if corpus.ndim != 2 or corpus.shape[1] != width or corpus.shape[0] == 0:
        raise ValueError(
            f"A {precision} corpus for {dim}-dimensional queries must be a non-empty "
            f"(num_documents, {width}) array, got shape {corpus.shape}. Embed queries and "
            "documents at the same Matryoshka size (`dim`)."
        )


def _bits(rows, precision, dim):
    """+-1 float32 `(rows, dim)` of packed bits (int8 "binary" codes are bytes - 128)."""
    rows = np.asarray(rows)
    if precision == "binary":
        rows = (rows.astype(np.int16) + 128).astype(np.uint8)
    bits = np.unpackbits(rows, axis=-1, count=dim)
    return bits.astype(np.float32) * 2 - 1


def _first_pass_scores(queries, chunk, precision, ranges):
    """`(num_queries, len(chunk))` scores of the first, compressed, pass."""
    dim = queries.shape[1]
    if precision in BINARY:
        # Hamming agreement of the sign bits: the cosine of the +-1 vectors,
        # 1 - 2 * hamming / dim (exact in float32 for any dim < 2**24).
        return _bits(np.packbits(queries > 0, axis=-1), "ubinary", dim) @ _bits(
            chunk, precision, dim
        ).T / dim
    if precision == "float32":
        chunk = np.asarray(chunk, dtype=np.float32)
        chunk = chunk / np.maximum(np.linalg.norm(chunk, axis=1, keepdims=True), 1e-12)
    else:
        chunk = dequantize_embeddings(chunk, precision, ranges)
    return queries @ chunk.T


def _top(scores, indices, count):
    """The `count` best of each row (unordered), with their indices."""
    if scores.shape[1] > count:
        keep = np.argpartition(-scores, count - 1, axis=1)[:, :count]
        scores = np.take_along_axis(scores, keep, axis=1)
        indices = np.take_along_axis(indices, keep, axis=1)
    return scores, indices


def semantic_search(
    queries,
    corpus,
    top_k=10,
    *,
    precision="float32",
    ranges=None,
    rescore=True,
    rescore_multiplier=4,
    rescore_embeddings=None,
):
    """Exact top-k search of float queries over a float or compressed corpus.

    Every document is scored (no index): float and int8 / uint8 corpora with
    the float query's dot product with the (dequantized) document, binary
    ones by the agreement of their sign bits (Hamming distance). With
    `rescore`, `top_k * rescore_multiplier` candidates are kept and re-ranked
    with the float query:

    - binary / ubinary corpora: against the documents' bits as +-1 values
      (scores `q . sign(d) / sqrt(dim)`): sentence-transformers' rescoring;
    - with `rescore_embeddings` (the corpus' float embeddings, e.g. a
      `np.load(path, mmap_mode="r")` array kept on disk), against those, for
      any precision: only the candidates' rows are read, and their scores are
      exact cosines.

    An int8 / uint8 corpus is already scored with the float query against its
    dequantized codes, so it is re-ranked only with `rescore_embeddings`.

    Args:
        queries: float `(num_queries, dim)` or `(dim,)` embeddings (normalised
            here to unit length).
        corpus: `(num_documents, dim)` float, or codes from
            `quantize_embeddings`: int8 / uint8 `(num_documents, dim)`, binary
            int8 / ubinary uint8 `(num_documents, ceil(dim / 8))`.
        top_k: results per query (at most `num_documents`).
        precision: what `corpus` holds: `"float32"` (any float dtype),
            `"int8"`, `"uint8"`, `"binary"` or `"ubinary"`.
        ranges: int8 / uint8: the float `(2, dim)` ranges the codes were made
            with (`quantization_ranges`).
        rescore: re-rank the top candidates with the float query (see above).
        rescore_multiplier: candidates kept per result for rescoring (>= 1).
        rescore_embeddings: optional float `(num_documents, dim)` embeddings of
            the corpus to rescore against.

    Returns:
        `(scores, indices)`: float32 and int64 `(num_queries, top_k)`, best
        first (ties by lower index); `(top_k,)` each for a `(dim,)` query.
        Scores are cosines for a float corpus or rescoring embeddings, and
        their estimates otherwise.

    Example:
    ```python
    docs = model.encode_document(texts)
    ranges = eg.quantization_ranges(docs)
    codes = eg.quantize_embeddings(docs, "int8", ranges=ranges)
    scores, indices = eg.semantic_search(model.encode_query(q), codes, 10,
                                         precision="int8", ranges=ranges)
    bits = eg.quantize_embeddings(docs, "ubinary")
    scores, indices = eg.semantic_search(model.encode_query(q), bits, 10, precision="ubinary",
                                         rescore_multiplier=4, rescore_embeddings=docs)
    ```
    """
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, got {precision!r}.")
    single = np.ndim(queries) == 1
    queries = _unit_queries(queries)
    dim = queries.shape[1]
    corpus = corpus if isinstance(corpus, np.ndarray) else np.asarray(corpus)
    _check_corpus(corpus, precision, dim)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive int, got {top_k!r}.")
    if not isinstance(rescore_multiplier, (int, np.integer)) or rescore_multiplier < 1:
        raise ValueError(f"`rescore_multiplier` must be an int >= 1, got {rescore_multiplier!r}.")
    if precision in ("int8", "uint8"):
        if ranges is None:
            raise ValueError(
                f"A {precision} corpus needs the `ranges` its codes were made with "
                "(`quantization_ranges(calibration)`)."
            )
    elif ranges is not None:
        raise ValueError(f"`ranges` apply to int8 / uint8 corpora, not to {precision!r}.")
    if rescore_embeddings is not None:
        if not isinstance(rescore_embeddings, np.ndarray):
            rescore_embeddings = np.asarray(rescore_embeddings)
        if rescore_embeddings.dtype.kind != "f" or rescore_embeddings.shape != (len(corpus), dim):
            raise ValueError(
                f"`rescore_embeddings` must be the corpus' float embeddings, shape "
                f"({len(corpus)}, {dim}); got {rescore_embeddings.dtype} {rescore_embeddings.shape}."
            )
    num_documents = corpus.shape[0]
    top_k = min(int(top_k), num_documents)
    rescoring = rescore and (rescore_embeddings is not None or precision in BINARY)
    candidates = min(num_documents, top_k * rescore_multiplier) if rescoring else top_k

    best_scores = np.empty((len(queries), 0), np.float32)
    best_indices = np.empty((len(queries), 0), np.int64)
    for start in range(0, num_documents, CHUNK_ROWS):
        chunk = corpus[start : start + CHUNK_ROWS]
        scores = _first_pass_scores(queries, chunk, precision, ranges).astype(np.float32)
        indices = np.broadcast_to(np.arange(start, start + len(chunk)), scores.shape)
        best_scores, best_indices = _top(
            np.concatenate([best_scores, scores], axis=1),
            np.concatenate([best_indices, indices], axis=1),
            candidates,
        )
    if rescoring:
        # Rows read once, in index order (cheap on a memory-mapped file).
        rows, inverse = np.unique(best_indices, return_inverse=True)
        if rescore_embeddings is not None:
            vectors = np.asarray(rescore_embeddings[rows], dtype=np.float32)
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        else:
            vectors = _bits(corpus[rows], precision, dim) / np.sqrt(dim)
        inverse = inverse.reshape(best_indices.shape)
        best_scores = np.einsum("qd,qcd->qc", queries, vectors[inverse]).astype(np.float32)
        best_scores, best_indices = _top(best_scores, best_indices, top_k)
    order = np.lexsort((best_indices, -best_scores), axis=-1)
    scores = np.take_along_axis(best_scores, order, axis=1)
    indices = np.take_along_axis(best_indices, order, axis=1).astype(np.int64)
    return (scores[0], indices[0]) if single else (scores, indices)
