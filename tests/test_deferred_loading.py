"""`from_preset` builds the model without random initial values, then reads
the weights: the result is the same as Keras' initialise-then-load."""

import keras
import numpy as np
import pytest
from keras.src.backend.common.variables import Variable

import keras_egemma as eg
from keras_egemma.io.deferred_variables import deferred_variables
from keras_egemma.io.mapped_weights import aligned_empty
from keras_egemma.io.mapped_weights import zero_copy_weight_files
from keras_egemma.presets import PRESETS

TEXTS = ["Which planet is known as the Red Planet?", "Venus is the hottest planet."]


@pytest.fixture(scope="module")
def int4_preset(tmp_path_factory):
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    model.quantize("int4", block_size=16)
    path = tmp_path_factory.mktemp("int4") / "preset"
    model.save_to_preset(path)
    return str(path)


def initialised_paths(monkeypatch):
    """Records the path of every variable Keras fills from its initializer."""
    paths = []
    original = Variable._initialize_with_initializer

    def record(self, initializer):
        paths.append(self.path)
        return original(self, initializer)

    monkeypatch.setattr(Variable, "_initialize_with_initializer", record)
    return paths


@pytest.mark.parametrize("preset", ["embeddinggemma_tiny", "int4"])
def test_deferred_load_equals_initialise_then_load(preset, int4_preset, monkeypatch):
    preset = int4_preset if preset == "int4" else PRESETS[preset]["path"]
    expected = eg.EmbeddingGemma._from_keras_preset(preset)
    paths = initialised_paths(monkeypatch)
    model = eg.EmbeddingGemma.from_preset(preset)
    # No model weight was given a random value first (the optimizer's and
    # metrics' variables are, by `compile`).
    assert not set(paths) & {w.path for w in model.weights}
    assert [w.path for w in model.weights] == [w.path for w in expected.weights]
    for a, b in zip(model.weights, expected.weights):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    np.testing.assert_array_equal(model.encode(TEXTS), expected.encode(TEXTS))


def test_model_loaded_without_initialisation_trains():
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    before = keras.ops.convert_to_numpy(model.backbone.token_embedding.embeddings)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    examples = [
        {"query": "red planet", "positive": "Mars is red."},
        {"query": "hot planet", "positive": "Venus is hot."},
    ]
    history = model.fit(examples, batch_size=2, sequence_length=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = keras.ops.convert_to_numpy(model.backbone.token_embedding.embeddings)
    assert np.abs(after - before).max() > 0


def test_other_uninitialised_variables_are_left_to_keras():
    with keras.StatelessScope(initialize_variables=False):
        outside = keras.Variable(keras.initializers.Ones(), shape=(2,))
        with deferred_variables() as pending:
            inside = keras.Variable(keras.initializers.Zeros(), shape=(3,))
    assert [v.path for v in pending] == [inside.path]
    # The outer scope's variable is still Keras' to initialise.
    keras.src.backend.common.variables.initialize_all_variables()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(outside), [1.0, 1.0])


@pytest.mark.parametrize("shape,dtype", [((7, 3), "float32"), ((5,), "int8"), ((2, 3, 4), "uint8")])
def test_aligned_empty_is_aligned(shape, dtype):
    for _ in range(5):
        x = aligned_empty(shape, dtype)
        assert x.ctypes.data % 64 == 0 and x.shape == shape and x.dtype == np.dtype(dtype)
        assert x.flags["C_CONTIGUOUS"]


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX adopts host arrays")
def test_jax_adopts_aligned_arrays_without_copying():
    """The premise of `zero_copy_weight_files`: on CPU, JAX takes an aligned
    array as its buffer (and copies a misaligned one)."""
    import jax.numpy as jnp

    x = aligned_empty((1000, 64), "float32")
    x[:] = 1.5
    assert jnp.asarray(x, dtype="float32").unsafe_buffer_pointer() == x.ctypes.data
    misaligned = np.empty(1000 * 64 + 1, "float32")[1:].reshape(1000, 64)
    assert jnp.asarray(misaligned).unsafe_buffer_pointer() != misaligned.ctypes.data


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_aligned_reads_load_what_keras_loads(tmp_path, dtype):
    """Every tensor read through the aligned store equals Keras' own read,
    bfloat16 included (read the way Keras reads it)."""
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny", dtype=dtype)
    path = str(tmp_path / "model.weights.h5")
    model.backbone.save_weights(path)
    expected = {v.path: keras.ops.convert_to_numpy(v.value) for v in model.backbone.weights}
    keras.utils.set_random_seed(1)
    fresh = eg.EmbeddingGemma.from_preset(
        "embeddinggemma_tiny", dtype=dtype, load_weights=False
    )
    with zero_copy_weight_files():
        fresh.backbone.load_weights(path)
    for v in fresh.backbone.weights:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v.value), expected[v.path])
