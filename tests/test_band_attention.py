"""Sliding layers computed as a band equal the dense masked computation.

The band form (`attention_kernels.sliding_window_band_attention`) scores each
block of `window // 2` queries against its own and the two neighbouring key
blocks. These tests compare it with the dense form under the window mask, and
the layer (which picks the band when it is cheaper) with the numpy reference
written from docs/reference.md, at lengths below, equal to and above the window,
with padding.
"""

import keras
import numpy as np
import numpy_reference as ref
import pytest
from test_layers import random_attention_weights
from test_layers import set_attention

from keras_egemma import layers
from keras_egemma.layers import attention_kernels as kernels

RNG = np.random.default_rng(7)


def np_(x):
    return keras.ops.convert_to_numpy(x)


def qkv(batch, length, kv_heads=1, groups=3, head_dim=8):
    q = RNG.normal(0, 1, (batch, length, kv_heads, groups, head_dim)).astype("float32")
    k = RNG.normal(0, 1, (batch, length, kv_heads, head_dim)).astype("float32")
    v = RNG.normal(0, 1, (batch, length, kv_heads, head_dim)).astype("float32")
    return q, k, v


def padding(length, pads):
    mask = np.ones((len(pads), length), bool)
    for row, pad in enumerate(pads):
        mask[row, length - pad :] = False
    return mask


@pytest.mark.parametrize("window", [8, 6])
@pytest.mark.parametrize("length", [4, 8, 9, 20, 37])
def test_band_equals_dense_masked_attention(window, length):
    # Row 0 unpadded, row 1 with its last 60% padding (some queries then see
    # only padding in part of their window), row 2 with one real token.
    pads = [0, (length * 3) // 5, length - 1]
    q, k, v = qkv(len(pads), length, kv_heads=2, groups=2)
    mask = padding(length, pads)
    band = np_(kernels.sliding_window_band_attention(q, k, v, mask, window))
    window_mask = np_(kernels.sliding_window_mask(length, window))
    dense = np_(kernels.dense_attention(
        q, k, v, np.logical_and(mask[:, None, None, None, :], window_mask[None, None, None])
    ))
    real = mask[:, :, None, None, None]
    assert band.shape == dense.shape == q.shape
    np.testing.assert_allclose(np.where(real, band, 0), np.where(real, dense, 0), atol=1e-5)
    assert np.isfinite(band).all()


def test_band_is_chosen_only_when_cheaper():
    # Published window 512: blocks of 256, each query scored against 768 keys.
    assert not kernels.band_is_cheaper(512, 512)
    assert not kernels.band_is_cheaper(768, 512)
    assert kernels.band_is_cheaper(1024, 512)
    assert kernels.band_is_cheaper(2048, 512)
    assert not kernels.band_is_cheaper(None, 512)
    assert kernels.band_is_cheaper(20, 8) and not kernels.band_is_cheaper(12, 8)


@pytest.mark.parametrize("length,padded", [(37, 11), (64, 50)])
def test_attention_layer_band_path_matches_numpy(length, padded):
    window, d = 8, 24
    assert kernels.band_is_cheaper(length, window)
    x = RNG.normal(0, 1, (2, length, d)).astype("float32")
    mask = np.ones((2, length), "int32")
    mask[1, length - padded :] = 0
    layer = layers.EmbeddingGemmaAttention(
        num_query_heads=3, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=12,
        sliding_window=window,
    )
    layer.build(x.shape)
    w = random_attention_weights(d)
    set_attention(layer, w)
    out = np_(layer(x, padding_mask=mask))
    expected = ref.attention(x, mask, w, heads=3, kv_heads=1, head_dim=16, scalar=12,
                             window=window, base=10_000.0, eps=1e-6)
    real = mask.astype(bool)
    np.testing.assert_allclose(out[real], expected[real], rtol=1e-4, atol=1e-5)
    assert np.isfinite(out).all()
