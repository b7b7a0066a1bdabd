# %% [markdown]
# # Semantic search over a folder of documents (RAG retrieval)
#
# Index every text file of a folder, paragraph by paragraph, answer
# questions with the top passages, hand them to a generator as context, and
# choose a Matryoshka size by measuring quality against index size.
#
# Offline, this uses the model bundled with the package
# (`embeddinggemma_mini`, distilled from all-MiniLM-L6-v2; see
# `presets/build_mini_preset.py`). On Kaggle, `PRESET =
# "embeddinggemma_300m"` runs the same code with the published model.
# The same search from a shell: `keras-egemma search "question" --corpus ./docs`.
#
# **Setup.** From a clone of the repository, `pip install -e ".[guides,jax]"`:
# the guides' extra (matplotlib, ipywidgets) and JAX, the backend the guides
# use unless `KERAS_BACKEND` names another (TensorFlow comes with the base
# install; PyTorch: see the README). This file is a notebook in jupytext's
# percent format: open it in Jupyter with jupytext, or convert it with
# `jupytext --to ipynb guides/semantic_search.py`; it also runs as a script.
#
# **Settings** (environment variables, read in the next cell): `EGEMMA_PRESET`
# (default `embeddinggemma_mini`); `EGEMMA_FIGURES`, the folder the plot is
# saved to (default: the current directory).

# %% [markdown]
# ## Load the model

# %%
import os
import re
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")

import matplotlib.pyplot as plt
import numpy as np

import keras_egemma as eg
from keras_egemma.evaluation import retrieval_metrics

PRESET = os.environ.get("EGEMMA_PRESET", "embeddinggemma_mini")
FIGURES = os.environ.get("EGEMMA_FIGURES", ".")
model = eg.EmbeddingGemma.from_preset(PRESET)

# %% [markdown]
# ## A document folder
# Here: one file per topic of the Python language reference (text that
# ships with Python). Point `FOLDER` at your own notes, docs or exports.

# %%
from pydoc_data.topics import topics

FOLDER = os.path.join(tempfile.mkdtemp(), "docs")
os.makedirs(FOLDER)
TOPICS = ["assert", "async", "break", "class", "context-managers", "continue", "dict",
          "exceptions", "for", "formatstrings", "function", "global", "if", "import",
          "lambda", "lists", "naming", "pass", "raise", "return", "string-methods",
          "truth", "try", "typesmapping", "while", "with", "yield"]
for name in TOPICS:
    with open(os.path.join(FOLDER, f"{name}.txt"), "w", encoding="utf-8") as f:
        f.write(topics[name])
print(len(os.listdir(FOLDER)), "files in", FOLDER)

# %% [markdown]
# ## Chunk and index
# Paragraphs are the passages (a few sentences each: short enough for one
# idea, long enough to answer a question). The file name is the document
# title, which EmbeddingGemma's document prompt takes: `title: {title} |
# text: {passage}`.

# %%
passages = []  # (title, text)
for name in sorted(os.listdir(FOLDER)):
    with open(os.path.join(FOLDER, name), encoding="utf-8") as f:
        for block in re.split(r"\n\s*\n", f.read()):
            text = " ".join(block.split())
            if len(text) > 80 and not text.startswith((">>>", "*", "=")):
                passages.append((name[: -len(".txt")], text))
index = model.encode_document([t for _, t in passages], titles=[n for n, _ in passages])
print(f"{len(passages)} passages -> index {index.shape}, {index.nbytes / 1e6:.2f} MB")

# %% [markdown]
# ## Search

# %%


def search(question, k=3, index=index, dim=None):
    q = model.encode_query(question, dim=dim)
    scores = model.similarity(q, index)[0]
    top = np.argsort(-scores)[:k]
    return [(float(scores[i]), *passages[i]) for i in top]


for question in ["How do I import a module?", "exception handling with try and except",
                 "How are lambda functions written?"]:
    print(f"\n{question}")
    for score, title, text in search(question):
        print(f"  {score:.3f}  [{title}] {text[:100]}...")

# %% [markdown]
# ## Retrieval for a generator (RAG)
# The top passages become the context of a prompt for any LLM (for example
# Gemma 3 with KerasHub's `Gemma3CausalLM` on Kaggle).

# %%
question = "How do I import a module?"
context = "\n\n".join(f"[{title}] {text}" for _, title, text in search(question, k=3))
prompt = f"Answer using only this context.\n\n{context}\n\nQuestion: {question}\nAnswer:"
print(prompt[:600], "...")

# %% [markdown]
# ## Choosing a Matryoshka size: quality against index size
# Held-out style pairs from the same folder: each passage's first sentence
# is a query whose answer is the rest of its passage. Truncating the index to
# fewer dimensions (then re-normalising) shrinks memory proportionally; the
# plot shows what it costs in nDCG@10. (The bundled model was trained on
# this very text, so its absolute scores here are optimistic; its held-out
# figures are in the README.)

# %%
pairs = []
for title, text in passages:
    sentences = re.split(r"(?<=[.!?])\s+", text)
    if len(sentences) >= 2:
        pairs.append((sentences[0], " ".join(sentences[1:])))
queries = model.encode_query([q for q, _ in pairs])
answers = model.encode_document([a for _, a in pairs])
full = model.embedding_dim
dims = [full] + [d for d in (256, 128, 64, 32, 16) if d < full]
quality = {}
for dim in dims:
    q = eg.layers.matryoshka_truncate(queries, dim)
    a = eg.layers.matryoshka_truncate(answers, dim)
    scores = np.asarray(q) @ np.asarray(a).T
    quality[dim] = retrieval_metrics(scores, list(range(len(pairs))))
    print(f"dim {dim:>3}: nDCG@10 {quality[dim]['ndcg@10']:.3f}  "
          f"recall@10 {quality[dim]['recall@10']:.3f}  "
          f"index {len(passages) * dim * 4 / 1e3:.0f} kB")

os.makedirs(FIGURES, exist_ok=True)
fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(dims, [quality[d]["ndcg@10"] for d in dims], marker="o", label="nDCG@10")
ax.plot(dims, [quality[d]["recall@10"] for d in dims], marker="s", label="recall@10")
ax.set(xlabel="embedding size (MRL)", ylabel="score", xscale="log",
       title=f"{PRESET}: {len(pairs)} first-sentence -> passage queries")
ax.set_xticks(dims, [str(d) for d in dims])
ax.minorticks_off()
ax.legend()
fig.tight_layout()
path = os.path.join(FIGURES, "semantic_search.png")
fig.savefig(path, dpi=100)
print("saved", path)
