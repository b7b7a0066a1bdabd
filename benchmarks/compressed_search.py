"""Compressed and approximate search against exact float search, on a real corpus.

The package ships no 10,000-document retrieval set (its sample corpus has 183
paragraphs), so this builds one offline from text installed on every machine
that runs the library: the docstrings of Python's standard library, numpy and
scipy, cut into paragraphs (80 to 1,000 characters, deduplicated, shuffled
with a fixed seed; the package versions go into the JSON). `--docs`
paragraphs are the corpus; the first sentence (up to 16 words, at least 5, a
leading numpydoc section header removed) of each of the next `--queries`
paragraphs is a query, so queries are not in the corpus.

Both are embedded with the bundled model (`embeddinggemma_mini`; documents
with the document prompt and their module / object name as title, queries
with the query prompt), at each `--dims` Matryoshka size. Then, per size,
each method's top 10 is compared with exact float32 search (recall@10):

- int8: `quantize_embeddings` with ranges from a 1,000-document calibration
  sample, searched by `semantic_search` (float query x dequantized codes);
- binary: sign bits, Hamming ranking alone, then rescored (`rescore_multiplier`
  x 10 candidates) against the bits (the first multiplier) and against the
  float32 embeddings read from a memory-mapped .npy file (each multiplier;
  what stays in memory is the bits);
- the FAISS HNSW index (`EmbeddingIndex`, M 32, ef_construction 200,
  ef_search 128).

Bytes per vector: what the method holds in memory per document (the index:
its saved size / documents). Query latency: the median over `--latency-queries`
single-query searches (after one warm-up), and the mean per query of one
batched search of all queries. Timings need a quiet machine; the thread count
is recorded (OMP_NUM_THREADS, numpy's BLAS and FAISS follow it).

    KERAS_BACKEND=jax python benchmarks/compressed_search.py [--docs 10000]
        [--queries 200] [--dims 384,128] [--multipliers 4,10,20]
        [--embeddings-cache results/compressed_search_embeddings.npz]
        [--output docs/results/compressed_search.json]
"""

import argparse
import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
import sysconfig
import tempfile
import time

import faiss
import keras
import numpy as np
from provenance import provenance

import keras_egemma as eg
from keras_egemma.io.atomic_saving import save_file_atomically

PACKAGES = ("numpy", "scipy")
SKIPPED_FOLDERS = {"test", "tests", "__pycache__", "site-packages", "idlelib", "lib2to3"}
TARGETS = {"int8": 0.97, "binary_rescored": 0.95, "index": 0.95}
K = 10


def _docstring_paragraphs(root, prefix):
    """`(title, paragraph)` of every module, class and function docstring under `root`."""
    found = []
    for folder, folders, files in os.walk(root):
        folders[:] = sorted(f for f in folders if f not in SKIPPED_FOLDERS and f[0] != ".")
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            try:
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            module = prefix + os.path.relpath(path, root)[:-3].replace(os.sep, ".")
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef)):
                    title = module if isinstance(node, ast.Module) else f"{module}.{node.name}"
                    for block in re.split(r"\n\s*\n", ast.get_docstring(node) or ""):
                        text = " ".join(block.split())
                        if 80 <= len(text) <= 1000 and not text.startswith((">>>", "--", "==")):
                            found.append((title, text))
    return found


def docstring_corpus(num_documents, num_queries, seed=0):
    """`(documents [(title, text)], queries [text], sources)`, deterministic
    for given package versions."""
    paragraphs = _docstring_paragraphs(sysconfig.get_paths()["stdlib"], "")
    for package in PACKAGES:
        root = os.path.dirname(importlib.util.find_spec(package).origin)
        paragraphs += _docstring_paragraphs(root, package + ".")
    unique = list({text: (title, text) for title, text in paragraphs}.values())
    order = np.random.default_rng(seed).permutation(len(unique))
    documents = [unique[i] for i in order[:num_documents]]
    queries = []
    for i in order[num_documents:]:
        # A numpydoc section header ("Parameters ----------") is no query.
        text = re.sub(r"^[A-Z][\w ]*\s-{3,}\s*", "", unique[i][1])
        words = re.split(r"(?<=[.?!])\s", text, maxsplit=1)[0].split()
        if len(words) >= 5 and "--" not in text[:80]:
            queries.append(" ".join(words[:16]))
        if len(queries) == num_queries:
            break
    if len(queries) < num_queries:
        raise SystemExit(f"only {len(unique)} paragraphs; ask for fewer --docs / --queries")
    sources = {"python": sys.version.split()[0],
               **{p: importlib.metadata.version(p) for p in PACKAGES},
               "paragraphs_available": len(unique)}
    return documents, queries, sources


def embed(documents, queries, cache):
    """Document and query embeddings, from `cache` when it holds these texts'."""
    texts_sha256 = hashlib.sha256(json.dumps([documents, queries]).encode()).hexdigest()
    if cache and os.path.exists(cache):
        with np.load(cache) as data:
            if str(data["texts_sha256"]) == texts_sha256:
                print(f"embeddings from {cache}", file=sys.stderr)
                return data["documents"], data["queries"]
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_mini")
    start = time.perf_counter()
    docs = model.encode_document([t for _, t in documents], titles=[t for t, _ in documents],
                                 batch_size=32)
    print(f"embedded {len(documents)} documents in {time.perf_counter() - start:.0f} s",
          file=sys.stderr)
    qs = model.encode_query(queries, batch_size=32)
    if cache:

        def write(staging):
            with open(staging, "wb") as f:
                np.savez(f, documents=docs, queries=qs, texts_sha256=np.array(texts_sha256))

        save_file_atomically(write, cache)
    return docs, qs


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def timed(search, queries, latency_queries):
    """(top-10 indices of all queries, median ms of single queries, batch ms per query)."""
    search(queries[:1])  # warm-up
    single = []
    for q in queries[:latency_queries]:
        start = time.perf_counter()
        search(q[None])
        single.append(time.perf_counter() - start)
    start = time.perf_counter()
    found = search(queries)
    batch = (time.perf_counter() - start) / len(queries)
    return found, 1000 * float(np.median(single)), 1000 * batch


def recall(found, exact):
    return float(np.mean([len(set(f.tolist()) & set(e.tolist())) / K
                          for f, e in zip(found, exact)]))


def run_dim(documents, queries, dim, multipliers, latency_queries, scratch):
    docs, qs = unit(documents[:, :dim]), unit(queries[:, :dim])
    rows = []

    def add(method, family, bytes_per_vector, search, note=""):
        found, single_ms, batch_ms = timed(search, qs, latency_queries)
        rows.append({"method": method, "family": family, "bytes_per_vector": bytes_per_vector,
                     "recall_at_10": recall(found, exact), "p50_ms_single_query": single_ms,
                     "ms_per_query_batched": batch_ms, "note": note})

    exact = eg.semantic_search(qs, docs, K)[1]
    add("float32, exact", "float32", 4 * dim, lambda q: eg.semantic_search(q, docs, K)[1])

    ranges = eg.quantization_ranges(docs[:1000])
    codes = eg.quantize_embeddings(docs, "int8", ranges=ranges)
    add("int8, exact over codes", "int8", dim,
        lambda q: eg.semantic_search(q, codes, K, precision="int8", ranges=ranges)[1],
        "ranges from 1,000 documents")

    bits = eg.quantize_embeddings(docs, "ubinary")
    on_disk = os.path.join(scratch, f"float32_{dim}.npy")
    np.save(on_disk, docs)
    floats = np.load(on_disk, mmap_mode="r")
    add("binary, Hamming only", "binary", bits.shape[1],
        lambda q: eg.semantic_search(q, bits, K, precision="ubinary", rescore=False)[1])
    add(f"binary, rescored on bits (x{multipliers[0]})", "binary", bits.shape[1],
        lambda q: eg.semantic_search(q, bits, K, precision="ubinary",
                                     rescore_multiplier=multipliers[0])[1])
    for m in multipliers:
        add(f"binary, rescored with float32 from disk (x{m})", "binary_rescored", bits.shape[1],
            lambda q, m=m: eg.semantic_search(q, bits, K, precision="ubinary",
                                              rescore_multiplier=m, rescore_embeddings=floats)[1],
            "float32 vectors memory-mapped, only candidates read")

    start = time.perf_counter()
    index = eg.EmbeddingIndex.build(docs, model="embeddinggemma_mini")
    build_s = time.perf_counter() - start
    path = os.path.join(scratch, f"index_{dim}.index")
    index.save(path)
    index = eg.EmbeddingIndex.load(path)
    add("FAISS HNSW index (M 32, ef 128)", "index", os.path.getsize(path) / len(docs),
        lambda q: index.search(q, K)[1], f"built in {build_s:.1f} s")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dims", default="384,128", help="Matryoshka sizes, comma-separated")
    parser.add_argument("--multipliers", default="4,10,20",
                        help="rescore multipliers (rescoring on the bits: the first only)")
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--embeddings-cache", default=None,
                        help=".npz to reuse embeddings from (written if absent)")
    parser.add_argument("--note", default="", help="a sentence to keep with the figures")
    parser.add_argument("--output", default=os.path.join("docs", "results",
                                                         "compressed_search.json"))
    args = parser.parse_args(argv)
    dims = [int(d) for d in args.dims.split(",")]
    multipliers = [int(m) for m in args.multipliers.split(",")]
    documents, queries, sources = docstring_corpus(args.docs, args.queries)
    doc_vectors, query_vectors = embed(documents, queries, args.embeddings_cache)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for dim in dims:
            results[str(dim)] = run_dim(doc_vectors, query_vectors, dim, multipliers,
                                        args.latency_queries, scratch)
            for row in results[str(dim)]:
                print(f"{dim:4} {row['method']:48} {row['bytes_per_vector']:8.1f} B "
                      f"recall@10 {row['recall_at_10']:.4f} "
                      f"{row['p50_ms_single_query']:7.2f} ms", file=sys.stderr)
    data = {
        **provenance(env=("KERAS_BACKEND", "OMP_NUM_THREADS")),
        "model": "embeddinggemma_mini",
        "backend": keras.backend.backend(),
        "documents": args.docs,
        "queries": args.queries,
        "corpus": "docstring paragraphs of the Python standard library, numpy and scipy",
        "corpus_sources": sources,
        "k": K,
        "targets": TARGETS,
        "threads": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "faiss": faiss.omp_get_max_threads()},
        "faiss_version": faiss.__version__,
        "numpy_version": np.__version__,
        "runs": results,
        "note": args.note,
    }

    def write(staging):
        with open(staging, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)

    save_file_atomically(write, args.output)
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
