"""Saving and loading int4 presets leaves the packed weights packed.

Keras' saving walk reads every attribute of each layer; on int4 layers
`embeddings` / `kernel` are properties that unpack the whole packed tensor
(for the published table, 192 MiB). `int4_weights_left_packed` hides them
from the walk. Checked: the properties raise inside the block only, on int4
layers only; a save and load of int4 and mixed presets calls Keras'
`unpack_int4` zero times (the same spy counts the calls of Keras' own
`load_weights`, so it can see them); the loaded model embeds as before.
"""

import keras
import numpy as np
import pytest
from keras.src import quantizers

import keras_egemma as eg
from keras_egemma.io.packed_int4 import int4_weights_left_packed

TEXTS = ["Mars is the red planet.", "A man plays a guitar on stage."]


def int4_layers():
    config = keras.quantizers.Int4QuantizationConfig(block_size=4)
    dense = keras.layers.Dense(3)
    dense.build((None, 8))
    einsum = keras.layers.EinsumDense("bd,dh->bh", output_shape=(3,))
    einsum.build((None, 8))
    embedding = keras.layers.Embedding(10, 8)
    embedding.build()
    for layer in (dense, einsum, embedding):
        layer.quantize("int4", config=config)
    return [(dense, "kernel"), (einsum, "kernel"), (embedding, "embeddings")]


def test_unpacking_properties_raise_inside_the_block_only():
    layers = int4_layers()
    unpacked = [keras.ops.convert_to_numpy(getattr(layer, name)) for layer, name in layers]
    float_dense = keras.layers.Dense(3)
    float_dense.build((None, 8))
    with int4_weights_left_packed():
        for layer, name in layers:
            # (On torch, the module's `__getattr__` rewords the message.)
            with pytest.raises(AttributeError):
                getattr(layer, name)
            # The packed variable itself stays readable.
            assert layer.quantization_mode == "int4"
        assert float_dense.kernel.shape == (8, 3)
    for (layer, name), expected in zip(layers, unpacked):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(getattr(layer, name)), expected)


def test_properties_are_restored_after_an_error():
    (dense, _), *_ = int4_layers()
    with pytest.raises(RuntimeError):
        with int4_weights_left_packed():
            raise RuntimeError("interrupted load")
    assert dense.kernel.shape == (8, 3)


@pytest.fixture
def unpack_calls(monkeypatch):
    """Counts calls of Keras' `unpack_int4` as its layers reach it."""
    calls = []
    original = quantizers.unpack_int4

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(quantizers, "unpack_int4", counting)
    return calls


@pytest.mark.parametrize("mode", ["int4", "mixed"])
def test_int4_preset_saves_and_loads_without_unpacking(mode, tmp_path, unpack_calls):
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    model.quantize(mode)
    expected = model.encode(TEXTS)
    unpack_calls.clear()
    model.save_to_preset(tmp_path / "preset")
    loaded = eg.EmbeddingGemma.from_preset(tmp_path / "preset")
    assert unpack_calls == []
    np.testing.assert_array_equal(loaded.encode(TEXTS), expected)
    # Keras' own loading walk, which the spy does see unpacking the table.
    loaded.backbone.load_weights(tmp_path / "preset" / "model.weights.h5")
    table = loaded.backbone.token_embedding._embeddings.shape
    assert tuple(table) in [tuple(shape) for shape in unpack_calls]
