"""Quantize and export: size on disk, memory, speed and embedding fidelity.

Saves the model as float32, bfloat16, int8, mixed and int4 presets, loads each
one in a fresh process to measure its model memory and encoding speed, and
compares its embeddings with float32's at every Matryoshka size: cosine to
the float32 embedding, and retrieval agreement (how many of float32's top 10
documents each query still finds). Then exports the int8 model to a
TensorFlow SavedModel and to ONNX and checks the artifacts against `encode`.

    python guides/quantize_and_export.py [--preset PATH] [--batch-size 32]

`--preset` takes anything `EmbeddingGemma.from_preset` loads (default: the
bundled `embeddinggemma_mini`, about a minute on two CPU cores). For the full
published configuration with random weights (no download; 262,144-token
vocabulary), build it with the benchmark's builder, then point the guide at it
(a few minutes and about 6 GiB of memory on a CPU):

    python -c "import sys; sys.path.insert(0, 'benchmarks'); \\
        import inference_speed; inference_speed.build_checkpoint('/tmp/egemma_full')"
    python guides/quantize_and_export.py --preset /tmp/egemma_full

Random weights say nothing about quality, but size, memory and speed are the
published model's, and the fidelity columns still show how far each format
moves the embeddings. Writes `quantize_and_export.png` and `.json` to
`EGEMMA_FIGURES` (default `guides/figures/`).
"""

# %% [markdown]
# # Quantize and export: size, memory, speed and fidelity
#
# Keras quantizes the model in place (`model.quantize("int8")`); a quantized
# model saves to a preset and loads back quantized, without ever
# materialising its float weights. This guide measures what each format
# buys and what it costs, on the corpus bundled with the package.

# %%
import argparse
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from keras_egemma.data import SAMPLE_CORPUS
from keras_egemma.evaluation.datasets import read_jsonl

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--preset", default=os.environ.get("EGEMMA_PRESET", "embeddinggemma_mini"))
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--worker", help=argparse.SUPPRESS)
args = parser.parse_args()
FIGURES = os.environ.get(
    "EGEMMA_FIGURES", os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures")
)

# %% [markdown]
# ## Queries and documents
# The sample corpus: paragraphs of Python's language reference. Each
# paragraph's first sentence is a query, the rest of it a titled document,
# as in `guides/semantic_search.py`.

# %%


def load_corpus():
    queries, titles, documents = [], [], []
    for _, row in read_jsonl(SAMPLE_CORPUS):
        sentences = re.split(r"(?<=[.!?])\s+", row["text"])
        if len(sentences) >= 2:
            queries.append(sentences[0])
            titles.append(row["title"])
            documents.append(" ".join(sentences[1:]))
    return queries, titles, documents


queries, titles, documents = load_corpus()

# %% [markdown]
# ## Measuring one format in its own process
# Peak memory is a high-water mark, so each format is measured in a fresh
# process: its baseline is the resident memory after the imports and the
# tokenizer, and its "model memory" is the peak above that while loading the
# preset and embedding the whole corpus. Speed is the second pass over the
# documents (the first compiles each padded shape).

# %%


def rss_bytes(field):
    """`VmRSS` (now) or `VmHWM` (peak) of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(preset, embeddings_path, batch_size):
    import keras_egemma as eg

    eg.EmbeddingGemmaPreprocessor.from_preset(preset)
    baseline = rss_bytes("VmRSS")
    model = eg.EmbeddingGemma.from_preset(preset)
    encode = dict(titles=titles, batch_size=batch_size, verbose=False)
    document_embeddings = model.encode_document(documents, **encode)
    query_embeddings = model.encode_query(queries, batch_size=batch_size, verbose=False)
    peak = rss_bytes("VmHWM")
    start = time.perf_counter()
    model.encode_document(documents, **encode)
    seconds = time.perf_counter() - start
    np.savez(embeddings_path, queries=query_embeddings, documents=document_embeddings)
    return {
        "model_memory_bytes": peak - baseline,
        "peak_rss_bytes": peak,
        "sentences_per_s": len(documents) / seconds,
    }


if args.worker:
    print(json.dumps(measure(*json.loads(args.worker))))
    sys.exit(0)

# %% [markdown]
# ## Five formats, saved as presets
# float32 and bfloat16 load with a dtype; the three quantized formats are
# the float32 model after `quantize`: per-channel int8, the paper's mixed
# recipe (int8 attention, int4 per-channel embedding table, feed-forward and
# head) and int4 with one scale per block of 32 inputs. Size on disk is the
# preset's weight files.

# %%
import keras_egemma as eg

WORK = tempfile.mkdtemp()
VARIANTS = ["float32", "bfloat16", "int8", "mixed", "int4"]
presets = {}
for variant in VARIANTS:
    dtype = "bfloat16" if variant == "bfloat16" else "float32"
    model = eg.EmbeddingGemma.from_preset(args.preset, dtype=dtype)
    if variant in ("int8", "mixed", "int4"):
        model.quantize(variant)
    presets[variant] = os.path.join(WORK, variant)
    model.save_to_preset(presets[variant])
full_dim = model.embedding_dim
dims = [full_dim] + [d for d in (512, 256, 128) if d < full_dim]
del model


def weights_bytes(preset):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(preset, "*weights*")))


results = {}
for variant in VARIANTS:
    print(f"measuring {variant} ...", flush=True)
    embeddings_path = os.path.join(WORK, f"{variant}.npz")
    job = json.dumps([presets[variant], embeddings_path, args.batch_size])
    worker = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", job], capture_output=True, text=True
    )
    if worker.returncode:
        raise RuntimeError(f"measuring {variant} failed:\n{worker.stderr[-3000:]}")
    results[variant] = json.loads(worker.stdout.strip().splitlines()[-1])
    results[variant]["weights_bytes"] = weights_bytes(presets[variant])
    with np.load(embeddings_path) as saved:
        results[variant]["embeddings"] = {k: saved[k] for k in saved.files}

# %% [markdown]
# ## Fidelity at each Matryoshka size
# Both embeddings are truncated to the size and re-normalised. Cosine is
# over every query and document; retrieval agreement is the mean overlap of
# each query's top 10 documents with float32's top 10.

# %%


def truncate(x, dim):
    return np.asarray(eg.layers.matryoshka_truncate(x, dim))


def top10(q, d):
    return np.argsort(-(q @ d.T), axis=1)[:, :10]


reference = results["float32"]["embeddings"]
for variant in VARIANTS:
    ours = results[variant].pop("embeddings")
    results[variant]["fidelity"] = {}
    for dim in dims:
        cosines = np.concatenate(
            [
                np.sum(truncate(ours[k], dim) * truncate(reference[k], dim), axis=1)
                for k in ("queries", "documents")
            ]
        )
        ref_top = top10(truncate(reference["queries"], dim), truncate(reference["documents"], dim))
        our_top = top10(truncate(ours["queries"], dim), truncate(ours["documents"], dim))
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ref_top, our_top)])
        results[variant]["fidelity"][dim] = {
            "cosine_mean": float(cosines.mean()),
            "cosine_min": float(cosines.min()),
            "top10_overlap": float(overlap),
        }

# %% [markdown]
# ## The table

# %%
MB, MIB = 1e6, 2**20
header = f"{'format':10s}{'weights MB':>11s}{'memory MiB':>11s}{'sent/s':>8s}" + "".join(
    f"{f'cos@{d} mean/min':>22s}{f'top10@{d}':>11s}" for d in dims
)
print(
    f"\n{args.preset}: {len(queries)} queries, {len(documents)} documents, "
    f"batch {args.batch_size}, {os.environ['KERAS_BACKEND']} backend"
)
print(header)
for variant, r in results.items():
    cells = "".join(
        f"{r['fidelity'][d]['cosine_mean']:16.5f}/{r['fidelity'][d]['cosine_min']:.5f}"
        f"{r['fidelity'][d]['top10_overlap']:11.3f}"
        for d in dims
    )
    print(
        f"{variant:10s}{r['weights_bytes'] / MB:11.2f}{r['model_memory_bytes'] / MIB:11.1f}"
        f"{r['sentences_per_s']:8.1f}{cells}"
    )

# %% [markdown]
# ## The plot

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 5, figsize=(20, 4))
x = np.arange(len(VARIANTS))
bars = [
    ("weights on disk (MB)", [results[v]["weights_bytes"] / MB for v in VARIANTS]),
    ("model memory (MiB)", [results[v]["model_memory_bytes"] / MIB for v in VARIANTS]),
    ("speed (sentences/s)", [results[v]["sentences_per_s"] for v in VARIANTS]),
]
for ax, (title, values) in zip(axes, bars):
    ax.bar(x, values)
    ax.set(title=title, xticks=x, xticklabels=VARIANTS)
for variant in VARIANTS[1:]:
    fidelity = results[variant]["fidelity"]
    axes[3].plot(dims, [fidelity[d]["cosine_mean"] for d in dims], marker="o", label=variant)
    axes[4].plot(dims, [fidelity[d]["top10_overlap"] for d in dims], marker="o", label=variant)
axes[3].set(title="mean cosine to float32", xlabel="embedding size (MRL)")
axes[4].set(title="top-10 overlap with float32", xlabel="embedding size (MRL)")
for ax in axes[3:]:
    ax.set_xscale("log")
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.minorticks_off()
    ax.legend()
fig.suptitle(
    f"{os.path.basename(os.path.normpath(args.preset))}: {len(queries)} queries, "
    f"{len(documents)} documents"
)
fig.tight_layout()
os.makedirs(FIGURES, exist_ok=True)
path = os.path.join(FIGURES, "quantize_and_export.png")
fig.savefig(path, dpi=100)
print("saved", path)

with open(os.path.join(FIGURES, "quantize_and_export.json"), "w") as f:
    json.dump(
        {
            "preset": args.preset,
            "backend": os.environ["KERAS_BACKEND"],
            "machine": f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, {platform.system()}",
            "date": time.strftime("%Y-%m-%d"),
            "queries": len(queries),
            "documents": len(documents),
            "batch_size": args.batch_size,
            "results": results,
        },
        f,
        indent=2,
    )

# %% [markdown]
# ## Export
# A TensorFlow SavedModel takes raw strings (prompt and tokenisation are in
# the graph): here, of the int8 model. ONNX takes token ids, which
# `prepare_inputs` makes exactly as `encode` does: here, of the float32
# model, since onnxruntime's CPU kernels have no integer `Einsum` for Keras'
# int8 matmuls. Each format comes from the backends that can write it (see
# the README's "Export" table); the others say which one to use.

# %%
from keras_egemma import export

model = eg.EmbeddingGemma.from_preset(presets["int8"])
sample = queries[:8]
expected = model.encode_query(sample, verbose=False)


def report(name, embeddings, expected):
    cosines = np.sum(np.asarray(embeddings)[: len(expected)] * expected, axis=1)
    print(f"{name}: min cosine to encode {cosines.min():.5f}")


try:
    export.export_saved_model(model, os.path.join(WORK, "embedder"), task="query")
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece op)

    embedder = tf.saved_model.load(os.path.join(WORK, "embedder"))
    report("int8 SavedModel", embedder.serve(tf.constant(sample)).numpy(), expected)
except (ValueError, ImportError) as e:
    print("SavedModel:", e)

model = eg.EmbeddingGemma.from_preset(presets["float32"])
expected = model.encode_query(sample, verbose=False)
try:
    length = 64
    export.export_onnx(model, os.path.join(WORK, "embedder.onnx"), length, batch_size=len(sample))
    import onnxruntime

    session = onnxruntime.InferenceSession(os.path.join(WORK, "embedder.onnx"))
    inputs = export.prepare_inputs(model, sample, length, "query")
    report("float32 ONNX", session.run(None, inputs)[0], expected)
except (ValueError, ImportError) as e:
    print("ONNX:", e)

# The presets (about 2.5 GB for the full configuration) were only for measuring.
shutil.rmtree(WORK)
