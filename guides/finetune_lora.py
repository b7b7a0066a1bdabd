# %% [markdown]
# # Fine-tuning on a Kaggle GPU or TPU: LoRA and mixed precision
#
# Fine-tune EmbeddingGemma on (query, positive, hard negative) triplets the
# way a single accelerator affords it: low-rank adapters (LoRA, rank 8) on
# the attention and feed-forward kernels, bfloat16 compute, and on a TPU
# `keras.distribution.DataParallel` over its cores. Then save the adapters
# alone (a few MB) and the merged model (a plain preset).
#
# **Where each cell ran.** This notebook was run here on a CPU, offline,
# with the small bundled model (`embeddinggemma_mini`), on JAX, as the test
# suite runs it. The cells (or branches) marked *accelerator only* pick the
# published model, the batch size and the distribution for a Kaggle GPU or
# TPU; **they were not run on a GPU or a TPU here**, and no figure in this
# notebook comes from one. LoRA under `DataParallel` is tested on 4 CPU
# devices (`integration/test_distributed.py`), not on a TPU.
#
# **On Kaggle.** Attach the EmbeddingGemma model (accepting the Gemma
# terms) and pick an accelerator: *TPU VM* (use JAX, the default here) or
# *GPU* (`KERAS_BACKEND` `"jax"` or `"torch"`). The notebook sees the
# accelerator and switches to `embeddinggemma_300m`.
#
# **Setup.** From a clone of the repository, `pip install -e ".[guides,jax]"`.
# This file is a notebook in jupytext's percent format: open it in Jupyter
# with jupytext, or convert it with
# `jupytext --to ipynb guides/finetune_lora.py`; it also runs as a script.
#
# **Settings** (environment variables, read in the next cell):
# `EGEMMA_PRESET` (default: `embeddinggemma_300m` on an accelerator,
# `embeddinggemma_mini` on a CPU); `EGEMMA_MIXED=0` trains in float32.

# %%
import os
import random
import re

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

import keras_egemma as eg
from keras_egemma.evaluation import retrieval_metrics


def accelerator():
    """`("tpu" | "gpu" | "cpu", number of devices, whether to compute in
    bfloat16)`: on TPUs, GPUs of compute capability 8 or more, and CPUs
    (where it runs the same code path here; recent x86 CPUs have bfloat16
    dot products)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        kind, devices = jax.default_backend(), jax.devices()
        fast = kind in ("tpu", "cpu") or (
            kind == "gpu" and float(getattr(devices[0], "compute_capability", "0")) >= 8
        )
        return kind, len(devices), fast
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return "gpu", torch.cuda.device_count(), torch.cuda.get_device_capability()[0] >= 8
        return "cpu", 1, True
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return ("gpu", len(gpus), False) if gpus else ("cpu", 1, True)


DEVICE, DEVICES, FAST_BFLOAT16 = accelerator()
ON_ACCELERATOR = DEVICE in ("gpu", "tpu")
PRESET = os.environ.get(
    "EGEMMA_PRESET", "embeddinggemma_300m" if ON_ACCELERATOR else "embeddinggemma_mini"
)
MIXED = os.environ.get("EGEMMA_MIXED", "1") != "0" and FAST_BFLOAT16
print(
    f"backend {keras.backend.backend()}, {DEVICES} {DEVICE} device(s), preset {PRESET}, "
    f"mixed_bfloat16: {MIXED}"
)

# %% [markdown]
# ## Precision and devices
# `mixed_bfloat16` keeps the weights (and the LoRA factors) in float32 and
# computes in bfloat16; it is one line, before the model is loaded. TPUs and
# GPUs from Ampere on (compute capability 8: A100, L4) compute bfloat16
# natively. Kaggle's T4 and P100 do not, so on those the cell above leaves
# it off (float16 is refused by this library: the activations overflow it).
#
# *Accelerator only*: with several devices on JAX (a TPU's 8 cores, or 2
# T4s), `DataParallel` splits each batch over them; in-batch negatives still
# span the whole batch. Not run here (one CPU device).

# %%
if MIXED:
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
if keras.backend.backend() == "jax" and DEVICES > 1:
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    print("DataParallel over", keras.distribution.list_devices())

# %% [markdown]
# ## The model, with LoRA adapters
# `enable_lora(8)` adds rank-8 adapters to every block's query, key, value,
# attention-output and feed-forward kernels and freezes every other weight:
# the optimizer holds state for the adapters only, which is what lets the
# published model train on one accelerator.

# %%
model = eg.EmbeddingGemma.from_preset(PRESET)
model.enable_lora(8)
print(
    f"trainable: {sum(int(np.prod(w.shape)) for w in model.trainable_weights):,} of "
    f"{model.count_params():,} parameters"
)

# %% [markdown]
# ## Data: (query, positive) pairs, hard negatives mined by the model
# Real text that ships with Python: the language reference. Each paragraph's
# first sentence is the query and the next sentence or two the positive.
# Replace this cell with your own pairs (a CSV read with `csv.DictReader`
# works as is). On a CPU only 32 pairs are trained on, negatives are mined
# among them, and 64 pairs are held out, so the notebook runs in seconds;
# on an accelerator every pair is used.

# %%
from pydoc_data.topics import topics

pairs = []
for topic in sorted(topics):
    for block in re.split(r"\n\s*\n", topics[topic]):
        text = " ".join(block.split())
        sentences = re.split(r"(?<=[.!?])\s+", text)
        if len(sentences) >= 2 and len(text) > 120 and not text.startswith(">>>"):
            pairs.append({"query": sentences[0], "positive": " ".join(sentences[1:3])[:300]})
random.Random(0).shuffle(pairs)
held_out, train_pairs = pairs[:128], pairs[128:]
if not ON_ACCELERATOR:
    held_out, train_pairs = held_out[:64], train_pairs[:32]
print(f"{len(train_pairs)} training pairs, {len(held_out)} held-out pairs")

# Negatives from the model's own ranking of every positive, skipping the
# closest few (likely unlabelled positives).
train = eg.training.mine_hard_negatives(
    model,
    [p["query"] for p in train_pairs],
    [p["positive"] for p in train_pairs],
    corpus=[p["positive"] for p in (pairs if ON_ACCELERATOR else train_pairs)],
    rank_window=(3, 20),
    verbose=False,
)
print(train[0])

# %% [markdown]
# ## Held-out retrieval before training
# Fresh adapters change nothing (their second factor starts at zero), so
# this is the base model's quality. Each held-out query ranks all held-out
# positives.


# %%
def evaluate(model):
    queries = model.encode_query([p["query"] for p in held_out], verbose=False)
    documents = model.encode_document([p["positive"] for p in held_out], verbose=False)
    scores = keras.ops.convert_to_numpy(queries) @ keras.ops.convert_to_numpy(documents).T
    metrics = retrieval_metrics(scores, list(range(len(held_out))))
    return {k: round(float(metrics[k]), 3) for k in ("ndcg@10", "recall@1", "recall@10")}


before = evaluate(model)
print("before:", before)

# %% [markdown]
# ## Train the adapters
# `compile()` with its defaults is the paper's objective (NCE with the
# hard negatives, spread-out, under MRL); LoRA takes a larger learning rate
# than full fine-tuning.
#
# *Accelerator only*: the batch of 64 and texts of up to 256 tokens, padded
# to one shape on a TPU (`padding="max_length"`: XLA compiles one program).
# Here: batches of 16, texts of up to 64 tokens, one epoch of 2 steps.

# %%
model.compile(optimizer=keras.optimizers.AdamW(2e-4 if ON_ACCELERATOR else 2e-3))
history = model.fit(
    train,
    batch_size=64 if ON_ACCELERATOR else 16,
    epochs=1,
    sequence_length=256 if ON_ACCELERATOR else 64,
    padding="max_length" if DEVICE == "tpu" else "longest",
    verbose=2,
)
after = evaluate(model)
print("after: ", after)

# %% [markdown]
# On the bundled model and 2 steps the change in quality is noise; the
# point here is that the path runs. With the published model, all pairs and
# an accelerator, this is a real fine-tuning run.
#
# ## Save: the adapters alone, or merged
# `save_lora_weights` writes only the adapters; `load_lora_weights` puts
# them on a fresh copy of the base model. `save_to_preset` merges them into
# the kernels: a plain float32 preset (also from a mixed-precision model)
# that loads without LoRA. Both are written beside their target and renamed
# into place.

# %%
texts = [p["query"] for p in held_out[:8]]
trained = keras.ops.convert_to_numpy(model.encode_query(texts, verbose=False))

model.save_lora_weights("finetuned.lora.h5")
print(f"adapters: {os.path.getsize('finetuned.lora.h5') / 1e6:.1f} MB")
base = eg.EmbeddingGemma.from_preset(PRESET)
base.load_lora_weights("finetuned.lora.h5")
again = keras.ops.convert_to_numpy(base.encode_query(texts, verbose=False))
print(f"adapters reloaded: max |difference| {np.abs(again - trained).max():.1e}")

model.save_to_preset("finetuned")
merged = eg.EmbeddingGemma.from_preset("finetuned")
print(f"merged preset reloaded: LoRA {merged.lora}, variables {merged.weights[0].dtype}")
