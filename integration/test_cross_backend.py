"""The same checkpoint gives the same embeddings on JAX, TensorFlow and torch.

Each backend runs in its own process (Keras picks its backend at import).
Runs once, from the JAX pass of the suite."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

SCRIPT = """
import json, sys
import numpy as np
import keras_egemma as eg
model = eg.EmbeddingGemma.from_preset(sys.argv[1])
texts = json.loads(sys.argv[2])
np.save(sys.argv[3], np.concatenate([
    model.encode_query(texts), model.encode_document(texts), model.encode(texts, task="STS")
]))
"""
TEXTS = [
    "Which planet is known as the Red Planet? Mars has a thin atmosphere and two moons.",
    "short",
    "Numbers 12345, unicode café 東京, emoji 🚀 and   extra   spaces in a longer line.",
]


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs once, in the JAX pass")
def test_backends_agree(st_checkpoint, tmp_path):
    results = {}
    for backend in ("jax", "tensorflow", "torch"):
        out = tmp_path / f"{backend}.npy"
        env = {**os.environ, "KERAS_BACKEND": backend}
        subprocess.run(
            [sys.executable, "-c", SCRIPT, st_checkpoint, json.dumps(TEXTS), str(out)],
            env=env, check=True, capture_output=True,
        )
        results[backend] = np.load(out)
    for backend in ("tensorflow", "torch"):
        np.testing.assert_allclose(results[backend], results["jax"], atol=1e-5, rtol=0,
                                   err_msg=backend)


FIRST_BATCH_SCRIPT = """
import json, sys
import keras
import keras_egemma as eg
from keras_egemma.training import as_training_dataset
model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
examples = json.loads(sys.argv[1])
x, y = next(iter(as_training_dataset(examples, model.preprocessor, batch_size=8,
                                     sequence_length=24)))
x = keras.tree.map_structure(lambda t: t.numpy(), x)
y = keras.tree.map_structure(lambda t: t.numpy(), y)
total, terms = model.objective(y, model(x))
print(json.dumps({"total": float(total), **{k: float(v) for k, v in terms.items()}}))
"""


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs once, in the JAX pass")
def test_backends_start_from_the_same_training_loss():
    examples = [
        {"query": f"Where does person {i} work?", "positive": f"Person {i} is a baker in Lima.",
         "negative": f"Person {i + 1} is a pilot in Oslo."}
        for i in range(8)
    ]
    values = {}
    for backend in ("jax", "tensorflow", "torch"):
        env = {**os.environ, "KERAS_BACKEND": backend}
        result = subprocess.run(
            [sys.executable, "-c", FIRST_BATCH_SCRIPT, json.dumps(examples)],
            env=env, check=True, capture_output=True, text=True,
        )
        values[backend] = json.loads(result.stdout.strip().splitlines()[-1])
    for backend in ("tensorflow", "torch"):
        for term, value in values[backend].items():
            assert abs(value - values["jax"][term]) <= 1e-4, (backend, term, values)
