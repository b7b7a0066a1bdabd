"""Loading holds no tensor twice, from every layout: the model is built
without random initial values, each file tensor is read once, when it is
assigned, and becomes the variable's buffer without a copy (the largest
mapped from the file). Full-size figures:
`benchmarks/loading_memory.py`."""

import hashlib
import os

import keras
import numpy as np
import pytest
from test_deferred_loading import initialised_paths

import keras_egemma as eg
from keras_egemma.convert import safetensors_file
from keras_egemma.io import mapped_weights

TEXTS = ["Which planet is known as the Red Planet?", "Venus is the hottest planet."]


def buffer_address(variable):
    value = variable.value
    if keras.backend.backend() == "jax":
        return value.unsafe_buffer_pointer()
    if keras.backend.backend() == "tensorflow":
        return np.from_dlpack(value.value()).ctypes.data
    return value.data_ptr()


@pytest.mark.parametrize("layout", ["huggingface", "keras_hub"])
def test_no_random_initial_values(layout, st_checkpoint, keras_hub_pair, monkeypatch):
    source = st_checkpoint if layout == "huggingface" else keras_hub_pair[0]
    expected = eg.EmbeddingGemma.from_preset(source)
    paths = initialised_paths(monkeypatch)
    model = eg.EmbeddingGemma.from_preset(source)
    # Neither our model's weights nor (KerasHub) the source model's got
    # random values (the metrics' variables do, by `compile`).
    assert not [p for p in paths if not p.endswith(("/total", "/count"))]
    assert not set(paths) & {w.path for w in model.weights}
    for a, b in zip(model.weights, expected.weights):
        assert a.path == b.path and a.dtype == b.dtype
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    np.testing.assert_allclose(model.encode(TEXTS), expected.encode(TEXTS), atol=1e-6)


def test_each_safetensors_tensor_read_once_and_adopted(st_checkpoint, monkeypatch):
    reads, arrays = {}, {}
    original = safetensors_file.SafetensorsFile.get

    def counting_get(self, name, map_mode=None):
        key = (os.path.relpath(self.path, st_checkpoint), name)
        reads[key] = reads.get(key, 0) + 1
        arrays[key] = original(self, name, map_mode)
        return arrays[key]

    monkeypatch.setattr(safetensors_file.SafetensorsFile, "get", counting_get)
    model = eg.EmbeddingGemma.from_preset(st_checkpoint)
    files = {os.path.relpath(os.path.join(d, "model.safetensors"), st_checkpoint)
             for d in (st_checkpoint, *(os.path.join(st_checkpoint, f) for f in
                                        ("2_Dense", "3_Dense")))}
    stored = {(f, n) for f in files
              for n in safetensors_file.SafetensorsFile(os.path.join(st_checkpoint, f)).keys()}
    assert set(reads) == stored and set(reads.values()) == {1}
    table = arrays[("model.safetensors", "embed_tokens.weight")]
    variable = model.backbone.token_embedding.embeddings
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), table)
    assert buffer_address(variable) == table.ctypes.data


def test_mapped_table_is_never_written(tmp_path, monkeypatch):
    """A table mapped from the preset as the variable's buffer (read-only on
    JAX, copy-on-write on PyTorch and TensorFlow) trains without touching the file."""
    monkeypatch.setattr(mapped_weights, "MAPPED_MIN_BYTES", 4096)
    source = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    source.save_to_preset(tmp_path / "preset")
    weights = tmp_path / "preset" / "model.weights.h5"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    model = eg.EmbeddingGemma.from_preset(tmp_path / "preset")
    with open("/proc/self/maps") as f:
        assert str(weights) in f.read(), "the table was not mapped from the file"
    table = model.backbone.token_embedding.embeddings
    before = keras.ops.convert_to_numpy(table).copy()
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    examples = [{"query": "red planet", "positive": "Mars is red."},
                {"query": "hot planet", "positive": "Venus is hot."}]
    model.fit(examples, batch_size=2, sequence_length=16, verbose=0)
    assert np.abs(keras.ops.convert_to_numpy(table) - before).max() > 0
    del model, table
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest
