"""Gradient caching gives the plain gradients (one SGD step with learning
rate 1 moves each weight by exactly minus its gradient)."""

import keras
import numpy as np
import pytest

import keras_egemma as eg

EXAMPLES = [
    {"query": f"What is item {i}?", "positive": f"Item {i} is thing number {i}.",
     "negative": [f"Item {i + 1} is something else.", f"Nothing about {i}."]}
    for i in range(8)
]


def one_step_gradients(chunk_size):
    keras.utils.set_random_seed(0)
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(1.0), mrl_dims=(128, 64),
                  gradient_cache_chunk_size=chunk_size)
    history = model.fit(EXAMPLES, batch_size=8, epochs=1, sequence_length=20, shuffle=False,
                        verbose=0)
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    return history.history, [b - a for a, b in zip(after, before)]


def test_gradient_cache_equals_plain_gradients():
    plain_history, plain = one_step_gradients(None)
    cached_history, cached = one_step_gradients(2)
    for key in ("loss", "nce", "spread_out"):
        np.testing.assert_allclose(cached_history[key], plain_history[key], atol=1e-5)
    assert max(np.abs(g).max() for g in plain) > 1e-3
    for g_cached, g_plain in zip(cached, plain):
        # Within 1e-5 of each tensor's gradient scale (float32 sums of ~40s).
        scale = max(np.abs(g_plain).max(), 1.0)
        np.testing.assert_allclose(g_cached / scale, g_plain / scale, atol=1e-5, rtol=0)


def test_gradient_cache_bad_chunk_sizes():
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    with pytest.raises(ValueError, match="positive int"):
        model.compile(gradient_cache_chunk_size=0)
    model.compile(gradient_cache_chunk_size=3)
    with pytest.raises(ValueError, match="not a multiple of gradient_cache_chunk_size=3"):
        model.fit(EXAMPLES, batch_size=8, sequence_length=16, verbose=0)
