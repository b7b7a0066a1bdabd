"""Weight quantization: fidelity to the float model, the quantizers against
numpy written from their definitions, preset round trips, bad arguments.

Measured cosine (quantized vs float embeddings, mean over the texts) with the
bounds asserted here:

| model | int8 | int4 and mixed (block 32, 8 for the checkpoint) | mixed_per_channel |
|---|---|---|---|
| `embeddinggemma_mini` (trained) | >= 0.99 | >= 0.95 | >= 0.95 |
| reference checkpoint (random, built in the test) | >= 0.99 | >= 0.95 | >= 0.90 |

(Fidelity on realistic weights, with tighter bounds: test_quantization_fidelity.py.)
"""

import json
import os

import keras
import numpy as np
import pytest

import keras_egemma as eg
from keras_egemma.io.errors import CheckpointError
from keras_egemma.presets import PRESETS

TEXTS = [
    "Which planet is known as the Red Planet?",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "How do I import a module in Python?",
    "The import statement finds a module, loads and initializes it.",
    "A man is playing a guitar on stage.",
    "def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
]
MODES = ["int8", "int4", "mixed", "mixed_per_channel"]
BOUNDS = {"int8": 0.99, "int4": 0.95, "mixed": 0.95, "mixed_per_channel": 0.95}
# Per-channel int4 on random, unstructured weights.
CHECKPOINT_BOUNDS = {"int8": 0.99, "int4": 0.95, "mixed": 0.95, "mixed_per_channel": 0.90}


def min_cosine(a, b):
    np.testing.assert_allclose(np.linalg.norm(a, axis=-1), 1.0, atol=1e-5)
    return np.sum(a * b, axis=-1).min()


@pytest.fixture(scope="module")
def tiny():
    return eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")


@pytest.fixture(scope="module")
def tiny_int8():
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    model.quantize("int8")
    return model


@pytest.fixture(scope="module")
def mini_float_embeddings():
    return eg.EmbeddingGemma.from_preset("embeddinggemma_mini").encode(TEXTS, task="document")


def weights_size(folder):
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for name in ("model.weights.h5", "task.weights.h5")
    )


@pytest.mark.parametrize("mode", MODES)
def test_quantized_bundled_model_is_close_to_float_and_round_trips(
    mode, mini_float_embeddings, tmp_path
):
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_mini")
    model.quantize(mode)
    quantized = model.encode(TEXTS, task="document")
    cosine = min_cosine(quantized, mini_float_embeddings)
    assert BOUNDS[mode] <= cosine < 1 - 1e-7  # close, and not a no-op

    model.save_to_preset(tmp_path / "preset")
    restored = eg.EmbeddingGemma.from_preset(tmp_path / "preset")
    assert restored.quantization == model.quantization
    np.testing.assert_array_equal(restored.encode(TEXTS, task="document"), quantized)
    modes = {layer.path: layer.quantization_mode for layer in restored._flatten_layers()}
    table = "int8" if mode == "int8" else "int4"
    attention = "int4" if mode == "int4" else "int8"
    assert modes["token_embedding"] == table
    assert modes["encoder_block_0/attention/query"] == attention
    assert modes["encoder_block_0/ffw_gating"] == table
    assert modes["projection_head/dense_0"] == table
    # Per-block int4 except in the paper's per-channel recipe.
    policy = restored.get_layer("projection_head").dense_layers[0].dtype_policy
    if mode in ("int4", "mixed"):
        assert policy.block_size == 32
    elif mode == "mixed_per_channel":
        assert policy.block_size in (None, -1)
    # int8: 1 byte per weight plus scales; int4: half a byte plus scales.
    bundled = PRESETS["embeddinggemma_mini"]["path"]
    ratio = weights_size(tmp_path / "preset") / weights_size(bundled)
    assert ratio < (0.3 if mode == "int8" else 0.2)


@pytest.mark.parametrize("mode", MODES)
def test_quantized_checkpoint_is_close_to_float(mode, st_checkpoint):
    model = eg.EmbeddingGemma.from_preset(st_checkpoint)
    expected = model.encode(TEXTS, task="document")
    # The checkpoint's layers are 72 and 96 wide: blocks of 8.
    model.quantize(mode, block_size=8)
    cosine = min_cosine(model.encode(TEXTS, task="document"), expected)
    assert CHECKPOINT_BOUNDS[mode] <= cosine < 1 - 1e-7


def embedding_rows(model):
    table = model.backbone.token_embedding
    ids = np.arange(table.input_dim, dtype="int32")[None]
    return keras.ops.convert_to_numpy(table(ids))[0]


def test_int8_embedding_matches_per_row_absmax():
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    w = embedding_rows(model)
    model.quantize("int8")
    step = np.abs(w).max(axis=1, keepdims=True) / 127
    expected = np.round(w / step) * step
    actual = embedding_rows(model)
    # Values within float rounding of a half step may round either way.
    assert np.all(np.abs(actual - expected) <= step * (1 + 1e-5))
    assert np.mean(np.isclose(actual, expected, rtol=1e-5, atol=1e-7)) > 0.999


@pytest.mark.parametrize("block_size", [16, 32])
def test_int4_embedding_error_is_within_half_a_block_step(block_size):
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    w = embedding_rows(model)
    model.quantize("int4", block_size=block_size)
    q = embedding_rows(model)
    rows, width = w.shape
    blocks = w.reshape(rows, width // block_size, block_size)
    # 16 levels spanning each block's [min, max] (asymmetric, with a zero
    # point): rounding is off by at most half a step, plus half a step when
    # the rounded zero point shifts the grid.
    step = (blocks.max(-1, keepdims=True) - blocks.min(-1, keepdims=True)) / 15
    error = np.abs(q.reshape(blocks.shape) - blocks)
    assert np.all(error <= step * (1 + 1e-4) + 1e-7)
    # Blocks are independent: a row's blocks get different steps.
    assert np.ptp(step[..., 0], axis=1).max() > 0
    assert len(np.unique(q[0])) <= 16 * (width // block_size)


def test_unknown_mode_is_refused(tiny):
    with pytest.raises(ValueError, match="Unknown quantization mode 'int3'.*'int8'"):
        tiny.quantize("int3")


@pytest.mark.parametrize("mode", ["int4", "mixed"])
@pytest.mark.parametrize("block_size", [48, 0, -32, 2.5, True])
def test_bad_block_size_is_refused(block_size, mode, tiny):
    with pytest.raises(ValueError, match="block_size"):
        tiny.quantize(mode, block_size=block_size)
    assert tiny.quantization is None
    assert all(layer.quantization_mode is None for layer in tiny._flatten_layers())


def test_block_size_error_names_the_layer(tiny):
    with pytest.raises(
        ValueError, match=r"does not divide the \d+ inputs of layer 'token_embedding'"
    ):
        tiny.quantize("int4", block_size=48)


def test_quantizing_twice_is_refused(tiny_int8):
    with pytest.raises(ValueError, match="already quantized \\(int8\\)"):
        tiny_int8.quantize("int4")


def test_custom_config_is_refused_with_a_pointer(tiny):
    with pytest.raises(ValueError, match="layer.quantize"):
        tiny.quantize("int8", filters="token_embedding")


@pytest.mark.parametrize(
    "quantization",
    [
        {"mode": "int4", "block_size": 32, "format_version": 99},
        {"mode": "int2", "block_size": 32, "format_version": 1},
    ],
)
def test_preset_from_a_newer_library_is_refused(quantization, tiny_int8, tmp_path):
    tiny_int8.save_to_preset(tmp_path / "p")
    path = tmp_path / "p" / "task.json"
    task = json.loads(path.read_text())
    task["config"]["quantization"] = quantization
    path.write_text(json.dumps(task))
    with pytest.raises(CheckpointError, match="newer library: upgrade"):
        eg.EmbeddingGemma.from_preset(tmp_path / "p")
