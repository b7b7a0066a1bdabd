# %% [markdown]
# # Finetuning EmbeddingGemma with the paper's objective
#
# Build (query, positive, hard negative) triplets, train with `model.fit` on
# the Keras backend of your choice, evaluate retrieval before and after, soup
# two runs, and plot the loss and the quality at each Matryoshka size.
#
# This runs on a CPU in a few minutes with the small model bundled with the
# package. With the published model (`PRESET = "embeddinggemma_300m"`, on a
# Kaggle GPU/TPU) the same code finetunes the real thing.
#
# **Setup.** From a clone of the repository, `pip install -e ".[guides,jax]"`:
# the guides' extra (matplotlib, ipywidgets) and JAX, the backend the guides
# use unless `KERAS_BACKEND` names another (TensorFlow comes with the base
# install; PyTorch: see the README). This file is a notebook in jupytext's
# percent format: open it in Jupyter with jupytext, or convert it with
# `jupytext --to ipynb guides/finetune.py`; it also runs as a script.
#
# **Settings** (environment variables, read in the next cell): `EGEMMA_PRESET`
# (default `embeddinggemma_mini`); `EGEMMA_EPOCHS`, epochs per run (default
# 4); `EGEMMA_TRAIN_EXAMPLES`, at most this many training triplets (default:
# all); `EGEMMA_FIGURES`, the folder the plot is saved to (default: the current
# directory).

# %%
import os
import random
import re

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import matplotlib.pyplot as plt

import keras_egemma as eg
from keras_egemma.evaluation import retrieval_metrics

PRESET = os.environ.get("EGEMMA_PRESET", "embeddinggemma_mini")
EPOCHS = int(os.environ.get("EGEMMA_EPOCHS", "4"))
TRAIN_EXAMPLES = int(os.environ.get("EGEMMA_TRAIN_EXAMPLES", "0")) or None
FIGURES = os.environ.get("EGEMMA_FIGURES", ".")

# %% [markdown]
# ## Data: question-like first sentences and the paragraphs they open
# Real text that ships with Python: the language reference topics. Each
# paragraph's first sentence is the query, the rest of the paragraph the
# positive, and another paragraph of the same topic a hard negative.

# %%
from pydoc_data.topics import topics

paragraphs = []
for topic in sorted(topics):
    for block in re.split(r"\n\s*\n", topics[topic]):
        text = " ".join(block.split())
        sentences = re.split(r"(?<=[.!?])\s+", text)
        if len(sentences) >= 2 and len(text) > 120 and not text.startswith(">>>"):
            paragraphs.append((topic, sentences[0], " ".join(sentences[1:])))

rng = random.Random(0)
rng.shuffle(paragraphs)
by_topic = {}
for topic, query, body in paragraphs:
    by_topic.setdefault(topic, []).append(body)


def triplet(topic, query, body):
    others = [b for b in by_topic[topic] if b != body] or [rng.choice(paragraphs)[2]]
    return {"query": query, "positive": body, "negative": rng.choice(others)}


split = int(0.8 * len(paragraphs))
train = [triplet(*p) for p in paragraphs[:split]][:TRAIN_EXAMPLES]
held_out = [{"query": q, "positive": b} for _, q, b in paragraphs[split:]]
print(f"{len(train)} training triplets, {len(held_out)} held-out pairs")

# %% [markdown]
# ## Retrieval quality at every Matryoshka size

# %%
model = eg.EmbeddingGemma.from_preset(PRESET)
full_dim = model.embedding_dim
DIMS = [full_dim] + [d for d in (512, 256, 128, 64, 32) if d < full_dim]


def evaluate(model):
    queries = model.encode_query([e["query"] for e in held_out], verbose=False)
    documents = model.encode_document([e["positive"] for e in held_out], verbose=False)
    results = {}
    for dim in DIMS:
        q = eg.layers.matryoshka_truncate(queries, dim)
        d = eg.layers.matryoshka_truncate(documents, dim)
        scores = keras.ops.convert_to_numpy(q) @ keras.ops.convert_to_numpy(d).T
        results[dim] = retrieval_metrics(scores, list(range(len(held_out))))
    return results


before = evaluate(model)
print("before:", {d: round(m["ndcg@10"], 3) for d, m in before.items()})

# %% [markdown]
# ## Train: NCE with hard negatives + spread-out, under MRL
# `compile()` with no arguments is the paper's objective; here a larger
# learning rate suits the small model. Two runs with different seeds, to soup.

# %%
histories, runs = [], []
for seed in (0, 1):
    keras.utils.set_random_seed(seed)
    run = eg.EmbeddingGemma.from_preset(PRESET)
    run.compile(optimizer=keras.optimizers.Adam(1e-3), mrl_dims=DIMS)
    history = run.fit(train, batch_size=32, epochs=EPOCHS, sequence_length=64, verbose=2)
    histories.append(history.history)
    runs.append(run)

souped = eg.soup(runs)
after = {f"run {i}": evaluate(run) for i, run in enumerate(runs)}
after["soup"] = evaluate(souped)
for name, results in {"before": before, **after}.items():
    m = results[full_dim]
    print(f"{name:>7}: nDCG@10 {m['ndcg@10']:.3f}  recall@1 {m['recall@1']:.3f}  "
          f"recall@10 {m['recall@10']:.3f}")

# %% [markdown]
# ## Plots: the loss, and quality per Matryoshka size

# %%
os.makedirs(FIGURES, exist_ok=True)
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
for i, history in enumerate(histories):
    left.plot(range(1, EPOCHS + 1), history["loss"], marker="o", label=f"run {i}: total")
    left.plot(range(1, EPOCHS + 1), history["nce"], linestyle="--", label=f"run {i}: NCE")
left.set(xlabel="epoch", ylabel="loss", title="Training loss")
left.set_xticks(range(1, EPOCHS + 1))
left.legend()
for name, results in {"before": before, **after}.items():
    right.plot(DIMS, [results[d]["ndcg@10"] for d in DIMS], marker="o", label=name)
right.set(xlabel="embedding size (MRL)", ylabel="nDCG@10", xscale="log",
          title="Held-out retrieval")
right.set_xticks(DIMS, [str(d) for d in DIMS])
right.minorticks_off()
right.legend()
fig.tight_layout()
path = os.path.join(FIGURES, "finetune.png")
fig.savefig(path, dpi=100)
print("saved", path)
