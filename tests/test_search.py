"""Compressed embeddings, search with rescoring, the FAISS index and `search --index`.

The numpy-level checks are backend-independent and run once, in the JAX pass;
the command-line checks embed with the tiny bundled model on every backend.
"""

import os
import re
import sys

import keras
import numpy as np
import pytest

import keras_egemma as eg
from keras_egemma import cli
from keras_egemma.cli import main
from keras_egemma.quantization.embedding_quantization import dequantize_embeddings

numpy_only = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="backend-independent: runs once, in the JAX pass"
)
TINY = ["--preset", "embeddinggemma_tiny"]


def clustered(num_documents=4000, num_queries=100, dim=128, clusters=40, seed=0):
    """Unit vectors around `clusters` centres (as real embeddings cluster by
    topic), queries drawn like documents; with positive offsets per dimension
    so int8 ranges are not symmetric."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) + rng.uniform(-0.5, 0.5, size=dim)

    def draw(n):
        x = centres[rng.integers(clusters, size=n)] + 0.8 * rng.normal(size=(n, dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return draw(num_documents), draw(num_queries)


def exact_top(queries, documents, k):
    return np.argsort(-(queries @ documents.T), axis=1, kind="stable")[:, :k]


def recall(found, exact):
    return np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)])


# --- quantize_embeddings ------------------------------------------------------


def reference_codes(x, precision, low, high):
    """The codes from their definition, one value at a time."""
    x = np.asarray(x, np.float64)
    if precision in ("binary", "ubinary"):
        out = []
        for row in x:
            bits = [1 if v > 0 else 0 for v in row] + [0] * (-len(row) % 8)
            out.append([int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8)])
        out = np.array(out)
        return (out - 128).astype(np.int8) if precision == "binary" else out.astype(np.uint8)
    step = np.where(high > low, (high.astype(np.float32) - low.astype(np.float32)) / 255, 1)
    codes = np.array([[min(max(np.floor((v - lo) / s), 0), 255) for v, lo, s in zip(row, low, step)]
                      for row in x])
    return (codes - 128).astype(np.int8) if precision == "int8" else codes.astype(np.uint8)


@numpy_only
@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_quantize_embeddings_matches_definition_and_sentence_transformers(precision):
    from sentence_transformers.util.quantization import quantize_embeddings as st_quantize

    rng = np.random.default_rng(1)
    calibration = rng.normal(size=(300, 37)).astype(np.float32)  # 37: bits pad a last byte
    calibration[:, 5] = 0.25  # a constant dimension: step 0 in the ranges
    x = rng.normal(scale=1.3, size=(20, 37)).astype(np.float32)  # some outside the ranges
    ranges = eg.quantization_ranges(calibration)
    ours = eg.quantize_embeddings(x, precision, calibration=calibration)
    expected = reference_codes(x, precision, calibration.min(0), calibration.max(0))
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected)
    st = st_quantize(x, precision, calibration_embeddings=calibration)
    np.testing.assert_array_equal(ours, st)
    if precision in ("int8", "uint8"):
        np.testing.assert_array_equal(eg.quantize_embeddings(x, precision, ranges=ranges), ours)
        # A single vector, with the corpus' ranges.
        np.testing.assert_array_equal(eg.quantize_embeddings(x[3], precision, ranges=ranges),
                                      ours[3])


@numpy_only
def test_dequantized_codes_are_within_half_a_step():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 64)).astype(np.float32)
    ranges = eg.quantization_ranges(x)
    step = (ranges[1] - ranges[0]) / 255
    for precision in ("int8", "uint8"):
        back = dequantize_embeddings(eg.quantize_embeddings(x, precision, ranges=ranges),
                                     precision, ranges)
        assert np.all(np.abs(back - x) <= step / 2 + 1e-6)


# --- semantic_search ----------------------------------------------------------


@numpy_only
def test_float_search_is_exact_search():
    documents, queries = clustered(num_documents=1000, num_queries=20)
    scores, indices = eg.semantic_search(queries, documents * 3.0, 7)  # normalised in the search
    np.testing.assert_array_equal(indices, exact_top(queries, documents, 7))
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ documents.T, indices, 1),
                               atol=1e-6)
    one_scores, one_indices = eg.semantic_search(queries[0], documents, 7)
    assert one_indices.shape == (7,) and np.array_equal(one_indices, indices[0])
    # More results asked than documents: all documents.
    assert eg.semantic_search(queries, documents[:3], 10)[1].shape == (20, 3)


@numpy_only
def test_compressed_search_recall_against_exact_float_search():
    documents, queries = clustered()
    exact = exact_top(queries, documents, 10)
    ranges = eg.quantization_ranges(documents[:1000])  # a calibration sample
    found = {}
    for precision in ("int8", "uint8"):
        codes = eg.quantize_embeddings(documents, precision, ranges=ranges)
        found[precision] = eg.semantic_search(queries, codes, 10, precision=precision,
                                              ranges=ranges)[1]
    bits = eg.quantize_embeddings(documents, "ubinary")
    signed = eg.quantize_embeddings(documents, "binary")
    found["binary, no rescoring"] = eg.semantic_search(queries, bits, 10, precision="ubinary",
                                                       rescore=False)[1]
    found["binary, rescored on bits"] = eg.semantic_search(queries, signed, 10,
                                                           precision="binary")[1]
    found["binary, rescored on floats"] = eg.semantic_search(
        queries, bits, 10, precision="ubinary", rescore_multiplier=10, rescore_embeddings=documents
    )[1]
    measured = {name: recall(f, exact) for name, f in found.items()}
    assert measured["int8"] >= 0.97 and measured["uint8"] >= 0.97, measured
    assert measured["binary, rescored on floats"] >= 0.95, measured
    # Rescoring with the float query improves on the bits alone.
    assert measured["binary, rescored on bits"] > measured["binary, no rescoring"] + 0.05, measured
    assert measured["binary, no rescoring"] < 0.9, measured  # the test can tell them apart
    # The signed and unsigned bit layouts search alike.
    np.testing.assert_array_equal(
        eg.semantic_search(queries, bits, 10, precision="ubinary")[1],
        found["binary, rescored on bits"],
    )


@numpy_only
def test_rescoring_reads_a_memory_mapped_float_corpus(tmp_path):
    documents, queries = clustered(num_documents=500, num_queries=10)
    np.save(tmp_path / "documents.npy", documents)
    on_disk = np.load(tmp_path / "documents.npy", mmap_mode="r")
    bits = eg.quantize_embeddings(documents, "ubinary")
    scores, indices = eg.semantic_search(queries, bits, 5, precision="ubinary",
                                         rescore_multiplier=500, rescore_embeddings=on_disk)
    # Every document a candidate: the rescored result is the exact one.
    np.testing.assert_array_equal(indices, exact_top(queries, documents, 5))
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ documents.T, indices, 1),
                               atol=1e-6)


@numpy_only
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda d, q: eg.quantize_embeddings(d.astype(np.int8), "int8"), "float embeddings"),
        (lambda d, q: eg.quantize_embeddings(d, "int4"), "`precision` must be one of"),
        (lambda d, q: eg.quantize_embeddings(d[0], "int8"), "at least 2 calibration"),
        (lambda d, q: eg.quantize_embeddings(d, "int8", ranges=np.zeros((2, 3))), "(2, 16)"),
        (lambda d, q: eg.quantize_embeddings(d * np.nan, "ubinary"), "NaN"),
        (lambda d, q: eg.semantic_search(q, d, 0), "positive int"),
        (lambda d, q: eg.semantic_search(q.astype(np.int8), d, 3), "float embeddings"),
        (lambda d, q: eg.semantic_search(q[:, :8], d, 3), "same Matryoshka size"),
        (lambda d, q: eg.semantic_search(q, eg.quantize_embeddings(d, "int8"), 3,
                                         precision="int8"), "needs the `ranges`"),
        (lambda d, q: eg.semantic_search(q, eg.quantize_embeddings(d, "ubinary"), 3,
                                         precision="binary"), "holds int8"),
        (lambda d, q: eg.semantic_search(q, d, 3, rescore_embeddings=d[:5]), "rescore_embeddings"),
        (lambda d, q: eg.semantic_search(q, eg.quantize_embeddings(d, "ubinary"), 3,
                                         precision="ubinary", rescore_multiplier=0), ">= 1"),
    ],
)
def test_bad_inputs_are_refused_with_the_reason(call, message):
    documents, queries = clustered(num_documents=50, num_queries=2, dim=16, clusters=4)
    with pytest.raises(ValueError, match=re.escape(message)):
        call(documents, queries)


# --- EmbeddingIndex -----------------------------------------------------------


@numpy_only
def test_index_recall_and_round_trip(tmp_path):
    documents, queries = clustered()
    ids = [f"doc-{i}" for i in range(len(documents))]
    index = eg.EmbeddingIndex.build(documents[:3000], ids=ids[:3000], model="m", prompt="p")
    index.add(documents[3000:], ids=ids[3000:])
    assert len(index) == 4000 and index.dim == 128
    scores, found = index.search(queries, k=10)
    exact = exact_top(queries, documents, 10)
    positions = np.vectorize(lambda s: int(s.split("-")[1]))(found)
    assert recall(positions, exact) >= 0.95
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ documents.T, positions, 1),
                               atol=1e-5)
    path = tmp_path / "sub" / "docs.index"
    index.save(path)
    assert os.listdir(path.parent) == ["docs.index"]  # no staging file left behind
    loaded = eg.EmbeddingIndex.load(path)
    again_scores, again = loaded.search(queries, k=10)
    np.testing.assert_array_equal(again, found)
    np.testing.assert_array_equal(again_scores, scores)
    config = loaded.get_config()
    assert {k: config[k] for k in ("dim", "metric", "model", "prompt", "size")} == {
        "dim": 128, "metric": "cosine", "model": "m", "prompt": "p", "size": 4000}
    one_scores, one = loaded.search(queries[0], k=3)
    assert one.shape == (3,) and list(one) == list(found[0, :3])


@numpy_only
def test_index_at_a_matryoshka_size_and_integer_ids():
    documents, queries = clustered(num_documents=600, num_queries=10)
    small = documents[:, :64] / np.linalg.norm(documents[:, :64], axis=1, keepdims=True)
    index = eg.EmbeddingIndex.build(small, ef_search=600)  # ef >= size: exhaustive
    _, found = index.search(queries[:, :64], k=5)
    assert found.dtype == np.int64
    np.testing.assert_array_equal(found, exact_top(queries[:, :64], small, 5))


@numpy_only
def test_index_save_is_atomic(tmp_path, monkeypatch):
    documents, _ = clustered(num_documents=100, num_queries=1, dim=16, clusters=4)
    path = tmp_path / "docs.index"
    eg.EmbeddingIndex.build(documents).save(path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        eg.EmbeddingIndex.build(documents[:50]).save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["docs.index"]


@numpy_only
def test_index_bad_inputs(tmp_path):
    documents, queries = clustered(num_documents=100, num_queries=3, dim=16, clusters=4)
    index = eg.EmbeddingIndex.build(documents, model="embeddinggemma_mini", prompt="p")
    with pytest.raises(ValueError, match=r"have 8 dimensions but the index holds 16.*dim=16"):
        index.search(queries[:, :8])
    with pytest.raises(ValueError, match="built with model 'embeddinggemma_mini', not 'other'"):
        index.check_compatible(model="other", dim=16)
    index.check_compatible(model="embeddinggemma_mini", dim=16, prompt="p")
    with pytest.raises(ValueError, match="built with dim 16, not 8"):
        index.check_compatible(dim=8)
    with pytest.raises(ValueError, match="unique"):
        eg.EmbeddingIndex.build(documents[:2], ids=["a", "a"])
    with pytest.raises(ValueError, match="one per embedding"):
        eg.EmbeddingIndex.build(documents[:2], ids=["a"])
    with pytest.raises(ValueError, match="positive int"):
        index.search(queries, k=0)
    with pytest.raises(ValueError, match="float embeddings"):
        eg.EmbeddingIndex.build(documents.astype(np.int8))
    not_an_index = tmp_path / "notes.txt"
    not_an_index.write_text("hello")
    with pytest.raises(ValueError, match="not an index saved by EmbeddingIndex.save"):
        eg.EmbeddingIndex.load(not_an_index)
    with pytest.raises(FileNotFoundError, match="No such index file"):
        eg.EmbeddingIndex.load(tmp_path / "missing.index")


# --- The command line (embeds with the tiny model: every backend) ------------------


@pytest.fixture(scope="module")
def tiny():
    return eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")


@pytest.fixture
def loaded_once(tiny, monkeypatch):
    """The command line with the tiny model loaded once for the module (each
    command would load it again)."""
    monkeypatch.setattr(cli, "_load", lambda preset, dtype=None: tiny)


def write_corpus(tmp_path):
    from pydoc_data.topics import topics

    path = tmp_path / "corpus.txt"
    paragraphs = [" ".join(topics[name].split()[:40]) for name in sorted(topics)[:60]]
    path.write_text("\n\n".join(paragraphs))
    return path


def results(out):
    return re.findall(r"^\s+\d\. ([\d.-]+)\s+(.*)$", out, flags=re.M)


def test_search_compressed_and_with_an_index(tmp_path, capsys, loaded_once):
    corpus = write_corpus(tmp_path)
    query = ["How do I import a module?", "--top-k", "5", "--corpus", str(corpus), *TINY]
    assert main(["search", *query]) == 0
    exact = results(capsys.readouterr().out)
    assert len(exact) == 5
    assert main(["search", *query, "--precision", "int8"]) == 0
    int8 = results(capsys.readouterr().out)
    assert len({label for _, label in int8} & {label for _, label in exact}) >= 4
    assert main(["search", *query, "--precision", "binary", "--rescore-multiplier", "12"]) == 0
    assert len(results(capsys.readouterr().out)) == 5

    index = tmp_path / "corpus.index"
    assert main(["search", *query, "--index", str(index)]) == 0
    captured = capsys.readouterr()
    assert f"Saved the index to {index}" in captured.err
    built = results(captured.out)
    # 60 documents, ef_search 128: the graph search is exhaustive, so exact.
    assert [label for _, label in built] == [label for _, label in exact]
    assert main(["search", *query, "--index", str(index)]) == 0
    captured = capsys.readouterr()
    assert "Loaded the index" in captured.err and results(captured.out) == built


def one_line_error(capsys, fragment):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err, err


def test_search_index_mismatches_are_errors(tmp_path, capsys, loaded_once):
    corpus = write_corpus(tmp_path)
    index = tmp_path / "corpus.index"
    query = ["query", "--corpus", str(corpus), "--index", str(index), *TINY]
    assert main(["search", *query]) == 0
    capsys.readouterr()
    assert main(["search", *query, "--dim", "64"]) == 1
    one_line_error(capsys, "built with dim 128, not 64")
    assert main(["search", "query", "--corpus", str(corpus), "--index", str(index)]) == 1
    one_line_error(capsys, "built with model 'embeddinggemma_tiny', not 'embeddinggemma_mini'")
    corpus.write_text(corpus.read_text() + "\n\nOne more paragraph.")
    assert main(["search", *query]) == 1
    one_line_error(capsys, "built from another corpus")
    assert main(["search", *query, "--precision", "int8"]) == 1
    one_line_error(capsys, "--precision applies to exact search")
    assert main(["search", "query", "--rescore-multiplier", "-1", *TINY]) == 1
    one_line_error(capsys, "--rescore-multiplier must be 0 or more")


def test_index_without_faiss_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_is_installed", lambda package: package != "faiss")
    assert main(["search", "q", "--index", str(tmp_path / "x.index"), *TINY]) == 1
    one_line_error(capsys, 'pip install -e ".[index]"')
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss fails
    documents, _ = clustered(num_documents=10, num_queries=1, dim=8, clusters=2)
    with pytest.raises(ModuleNotFoundError, match=re.escape('pip install "keras-egemma[index]"')):
        eg.EmbeddingIndex.build(documents)
