# %% [markdown]
# # EmbeddingGemma in Keras: quickstart
#
# Load a model, embed queries and documents with the right task prompts,
# pick a Matryoshka size, and rank documents by cosine similarity. Runs on
# JAX, TensorFlow or PyTorch: set `KERAS_BACKEND` before importing Keras.
#
# On Kaggle, attach the EmbeddingGemma model (accepting the Gemma terms) and
# use `PRESET = "embeddinggemma_300m"`. Offline, this guide uses the small
# model bundled with the package (`embeddinggemma_mini`: 4 layers, distilled
# from all-MiniLM-L6-v2; far weaker than the published model, but it ranks
# sensibly).
#
# **Setup.** From a clone of the repository, `pip install -e ".[guides,jax]"`:
# the guides' extra and JAX, the backend the guides use unless `KERAS_BACKEND`
# names another (TensorFlow comes with the base install; PyTorch: see the
# README). This file is a notebook in jupytext's percent format: open it in
# Jupyter with jupytext, or convert it with
# `jupytext --to ipynb guides/quickstart.py`; it also runs as a script.
#
# **Settings** (environment variables, read in the next cell): `EGEMMA_PRESET`,
# the model to load (default `embeddinggemma_mini`).

# %% [markdown]
# ## Load a model
# The backend is chosen before Keras is first imported. `list_presets()`
# names the registered models; `from_preset` also takes a preset folder or
# a Kaggle / Hugging Face handle.

# %%
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras_egemma as eg

PRESET = os.environ.get("EGEMMA_PRESET", "embeddinggemma_mini")
print(eg.list_presets())
model = eg.EmbeddingGemma.from_preset(PRESET)

# %% [markdown]
# ## Queries and documents use different prompts
# `encode_query` prepends `task: search result | query: `; `encode_document`
# prepends `title: none | text: ` (or the title you give).

# %%
query = "Which planet is known as the Red Planet?"
documents = [
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
]
q = model.encode_query(query)
d = model.encode_document(documents, titles=["Venus", "Mars", "Jupiter", "Saturn"])
scores = model.similarity(q, d)[0]
for score, doc in sorted(zip(scores, documents), reverse=True):
    print(f"{score:.3f}  {doc}")

# %% [markdown]
# ## Other tasks and Matryoshka sizes
# Any prompt name of the model card works as `task=`; `dim=` keeps the first
# dimensions and re-normalises (768, 512, 256, 128 are trained).

# %%
pairs = ["A man is playing a guitar.", "Someone plays an instrument."]
full = model.encode(pairs, task="STS")
small = model.encode(pairs, task="STS", dim=full.shape[1] // 2)
print("STS similarity, full size:", model.similarity(full[:1], full[1:])[0, 0])
print("STS similarity, half size:", model.similarity(small[:1], small[1:])[0, 0])
print("prompt for 'fact checking':", model.preprocessor.prompt_for("fact checking"))

# %% [markdown]
# ## Save and reload
# A preset folder holds the config, weights, tokenizer and prompts.

# %%
import tempfile

path = os.path.join(tempfile.mkdtemp(), "my_preset")
model.save_to_preset(path)
reloaded = eg.EmbeddingGemma.from_preset(path)
assert (reloaded.encode_query(query) == q).all()
print("saved and reloaded", path)
