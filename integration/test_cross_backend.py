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
