# %% [markdown]
# # Quantize and export: size, memory, speed and fidelity
#
# Keras quantizes the model in place (`model.quantize("int8")`); a quantized
# model saves to a preset and loads back quantized, without ever
# materialising its float weights. This guide saves the model as float32,
# bfloat16, int8, mixed and int4 presets, loads each one in a fresh process
# to measure its model memory and encoding speed, and compares its embeddings
# with float32's at every Matryoshka size: cosine to the float32 embedding,
# and retrieval agreement (how many of float32's top 10 documents each query
# still finds). Then it exports the model to a TensorFlow SavedModel and to
# ONNX and checks the artifacts against `encode`.
#
# **Setup.** From a clone of the repository, `pip install -e ".[guides,jax]"`:
# the guides' extra (matplotlib, ipywidgets, the ONNX exporters and ONNX
# Runtime) and JAX, the backend the guides use unless `KERAS_BACKEND` names
# another (TensorFlow comes with the base install; PyTorch: see the README).
# This file is a notebook in jupytext's percent format: open it in Jupyter
# with jupytext, or convert it with
# `jupytext --to ipynb guides/quantize_and_export.py`; it also runs as a
# script.
#
# **Settings** (environment variables, read in the next cell):
# `EGEMMA_PRESET` takes anything `EmbeddingGemma.from_preset` loads (default:
# the bundled `embeddinggemma_mini`, about a minute on two CPU cores);
# `EGEMMA_BATCH_SIZE` (default 32); `EGEMMA_DOCUMENTS`, at most this many
# queries and documents (default: all); `EGEMMA_FIGURES`, the folder for the
# plot and the JSON of results (default: the current directory).
#
# For the full published configuration with random weights (no download;
# 262,144-token vocabulary; a few minutes and about 6 GiB of memory on a
# CPU), build it with the benchmark's builder and point `EGEMMA_PRESET` at it:
#
#     python -c "import sys; sys.path.insert(0, 'benchmarks'); \
#         import inference_speed; inference_speed.build_checkpoint('/tmp/egemma_full')"
#
# Random weights say nothing about quality, but size, memory and speed are
# the published model's, and the fidelity columns still show how far each
# format moves the embeddings.

# %%
import glob
import json
import os
import platform
import re
import shutil
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np

import keras_egemma as eg
from keras_egemma.data import SAMPLE_CORPUS
from keras_egemma.evaluation.datasets import read_jsonl
from keras_egemma.evaluation.footprint import measure_in_fresh_process

PRESET = os.environ.get("EGEMMA_PRESET", "embeddinggemma_mini")
BATCH_SIZE = int(os.environ.get("EGEMMA_BATCH_SIZE", "32"))
DOCUMENTS = int(os.environ.get("EGEMMA_DOCUMENTS", "0")) or None
FIGURES = os.environ.get("EGEMMA_FIGURES", ".")

# %% [markdown]
# ## Queries and documents
# The sample corpus bundled with the package: paragraphs of Python's
# language reference. Each paragraph's first sentence is a query, the rest of
# it a titled document, as in the semantic search guide.

# %%
queries, titles, documents = [], [], []
for _, row in read_jsonl(SAMPLE_CORPUS):
    sentences = re.split(r"(?<=[.!?])\s+", row["text"])
    if len(sentences) >= 2:
        queries.append(sentences[0])
        titles.append(row["title"])
        documents.append(" ".join(sentences[1:]))
queries, titles, documents = queries[:DOCUMENTS], titles[:DOCUMENTS], documents[:DOCUMENTS]
print(f"{len(queries)} queries, {len(documents)} documents")

# %% [markdown]
# ## Five formats, saved as presets
# float32 and bfloat16 load with a dtype; the three quantized formats are
# the float32 model after `quantize`: per-channel int8, mixed (int8
# attention, int4 with one scale per block of 32 inputs for the embedding
# table, feed-forward and head) and int4 per block everywhere. (The paper's
# per-channel mixed recipe, `"mixed_per_channel"`, is for weights trained
# for it with `quantize_aware`; after training it loses the most.) Size on
# disk is the preset's weight files.

# %%
WORK = tempfile.mkdtemp()
VARIANTS = ["float32", "bfloat16", "int8", "mixed", "int4"]
presets = {}
for variant in VARIANTS:
    dtype = "bfloat16" if variant == "bfloat16" else "float32"
    model = eg.EmbeddingGemma.from_preset(PRESET, dtype=dtype)
    if variant in ("int8", "mixed", "int4"):
        model.quantize(variant)
    presets[variant] = os.path.join(WORK, variant)
    model.save_to_preset(presets[variant])
full_dim = model.embedding_dim
dims = [full_dim] + [d for d in (512, 256, 128) if d < full_dim]
del model


def weights_bytes(preset):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(preset, "*weights*")))


print({variant: f"{weights_bytes(path) / 1e6:.2f} MB" for variant, path in presets.items()})

# %% [markdown]
# ## Memory and speed, each format in a fresh process
# Peak memory is a high-water mark, so each format is measured in a process
# of its own (`keras_egemma.evaluation.footprint.measure_in_fresh_process`,
# which starts `python -c`, so it works from a notebook too). Its baseline is
# the resident memory once Keras and the tokenizer are loaded; "model
# memory" is the peak above that while loading the preset and embedding the
# whole corpus. Speed is the second pass over the documents (the first
# compiles each padded shape).

# %%
results = {}
for variant in VARIANTS:
    print(f"measuring {variant} ...", flush=True)
    measured = measure_in_fresh_process(
        presets[variant], documents, queries, titles=titles, batch_size=BATCH_SIZE
    )
    results[variant] = {
        "model_memory_bytes": measured["model_memory_bytes"],
        "peak_rss_bytes": measured["peak_rss_bytes"],
        "sentences_per_s": measured["sentences_per_s"],
        "weights_bytes": weights_bytes(presets[variant]),
        "embeddings": {
            "queries": measured["query_embeddings"],
            "documents": measured["document_embeddings"],
        },
    }

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
    f"\n{PRESET}: {len(queries)} queries, {len(documents)} documents, "
    f"batch {BATCH_SIZE}, {os.environ['KERAS_BACKEND']} backend"
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
    f"{os.path.basename(os.path.normpath(PRESET))}: {len(queries)} queries, "
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
            "preset": PRESET,
            "backend": os.environ["KERAS_BACKEND"],
            "machine": f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, {platform.system()}",
            "date": time.strftime("%Y-%m-%d"),
            "queries": len(queries),
            "documents": len(documents),
            "batch_size": BATCH_SIZE,
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
