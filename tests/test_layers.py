"""Layers against plain numpy written from docs/reference.md, on the active backend."""

import keras
import numpy as np
import numpy_reference as ref
import pytest

from keras_egemma import layers
from keras_egemma.layers.int4_row_lookup import gather_int4_rows_first

RNG = np.random.default_rng(0)
KW = dict(heads=3, kv_heads=1, head_dim=16, scalar=12, base=10_000.0, eps=1e-6)


def np_(x):
    return keras.ops.convert_to_numpy(x)


def random_attention_weights(d):
    h, n, k = KW["head_dim"], KW["heads"], KW["kv_heads"]
    return {
        "q": RNG.normal(0, 0.3, (n, d, h)),
        "k": RNG.normal(0, 0.3, (k, d, h)),
        "v": RNG.normal(0, 0.3, (k, d, h)),
        "o": RNG.normal(0, 0.3, (n, h, d)),
        "q_norm": RNG.normal(0, 0.5, (h,)),
        "k_norm": RNG.normal(0, 0.5, (h,)),
    }


def set_attention(layer, w):
    layer.query_dense.kernel.assign(w["q"])
    layer.key_dense.kernel.assign(w["k"])
    layer.value_dense.kernel.assign(w["v"])
    layer.output_dense.kernel.assign(w["o"])
    layer.query_norm.scale.assign(w["q_norm"])
    layer.key_norm.scale.assign(w["k_norm"])


def test_rms_normalization_matches_equation():
    x = RNG.normal(0, 3, (2, 5, 8)).astype("float32")
    layer = layers.RMSNormalization(epsilon=1e-6)
    layer.build(x.shape)
    w = RNG.normal(0, 0.5, 8)
    layer.scale.assign(w)
    np.testing.assert_allclose(np_(layer(x)), ref.rms_norm(x, w), rtol=1e-5, atol=1e-6)


def test_rms_normalization_computes_in_float32_for_bfloat16():
    x = np.array([[300.0, 301.0, 302.0, 303.0]], "float32")
    layer = layers.RMSNormalization(dtype="bfloat16")
    out = np_(keras.ops.cast(layer(x), "float32"))
    expected = ref.rms_norm(x, np.zeros(4))
    np.testing.assert_allclose(out, expected, rtol=1e-2)


@pytest.mark.parametrize("window", [None, 8, 6])
@pytest.mark.parametrize("padded", [0, 7])
def test_attention_matches_numpy(window, padded):
    d, length = 24, 22
    x = RNG.normal(0, 1, (2, length, d)).astype("float32")
    mask = np.ones((2, length), "int32")
    mask[1, length - padded :] = 0
    layer = layers.EmbeddingGemmaAttention(
        num_query_heads=3, num_key_value_heads=1, head_dim=16,
        query_pre_attn_scalar=12, sliding_window=window, rope_max_wavelength=10_000.0,
    )
    layer.build(x.shape)
    w = random_attention_weights(d)
    set_attention(layer, w)
    out = np_(layer(x, padding_mask=mask))
    expected = ref.attention(x, mask, w, window=window, **{k: v for k, v in KW.items()})
    real = mask.astype(bool)
    np.testing.assert_allclose(out[real], expected[real], rtol=1e-4, atol=1e-5)
    assert np.isfinite(out).all()


def test_sliding_window_rule_is_symmetric_half_window():
    mask = np_(layers.attention.sliding_window_mask(12, 8))
    i, j = np.indices((12, 12))
    np.testing.assert_array_equal(mask, np.abs(i - j) <= 4)


def test_fully_masked_padded_rows_stay_finite():
    # Rows 10.. are padding and farther than window // 2 from every real token.
    d, length = 24, 30
    x = RNG.normal(0, 1, (1, length, d)).astype("float32")
    mask = np.zeros((1, length), "int32")
    mask[0, :5] = 1
    layer = layers.EmbeddingGemmaAttention(3, 1, 16, sliding_window=8)
    assert np.isfinite(np_(layer(x, padding_mask=mask))).all()


def test_encoder_block_matches_numpy():
    d, f, length = 24, 40, 20
    x = RNG.normal(0, 1, (2, length, d)).astype("float32")
    mask = np.ones((2, length), "int32")
    mask[0, 15:] = 0
    block = layers.EmbeddingGemmaEncoderBlock(
        hidden_dim=d, intermediate_dim=f, num_query_heads=3, num_key_value_heads=1,
        head_dim=16, query_pre_attn_scalar=12, sliding_window=8,
    )
    block.build(x.shape)
    w = random_attention_weights(d)
    w.update(
        pre_attn=RNG.normal(0, 0.5, d), post_attn=RNG.normal(0, 0.5, d),
        pre_ffw=RNG.normal(0, 0.5, d), post_ffw=RNG.normal(0, 0.5, d),
        gate=RNG.normal(0, 0.3, (d, f)), up=RNG.normal(0, 0.3, (d, f)),
        down=RNG.normal(0, 0.3, (f, d)),
    )
    set_attention(block.attention, w)
    block.pre_attention_norm.scale.assign(w["pre_attn"])
    block.post_attention_norm.scale.assign(w["post_attn"])
    block.pre_ffw_norm.scale.assign(w["pre_ffw"])
    block.post_ffw_norm.scale.assign(w["post_ffw"])
    block.ffw_gating.kernel.assign(w["gate"])
    block.ffw_gating_2.kernel.assign(w["up"])
    block.ffw_linear.kernel.assign(w["down"])
    out = np_(block(x, padding_mask=mask))
    expected = ref.encoder_block(x, mask, w, window=8, **KW)
    real = mask.astype(bool)
    np.testing.assert_allclose(out[real], expected[real], rtol=1e-4, atol=2e-5)


def test_mean_pooling_ignores_nan_in_padding():
    x = RNG.normal(0, 1, (2, 6, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    x[0, 4] = np.nan
    x[0, 5] = np.inf
    out = np_(layers.MeanPooling()(x, padding_mask=mask))
    np.testing.assert_allclose(out, ref.mean_pool(np.nan_to_num(x), mask), rtol=1e-6)
    assert np.isfinite(out).all()


def test_first_and_last_token_pooling():
    x = RNG.normal(0, 1, (2, 5, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(np_(layers.FirstTokenPooling()(x, padding_mask=mask)), x[:, 0])
    last = np_(layers.LastTokenPooling()(x, padding_mask=mask))
    np.testing.assert_array_equal(last, np.stack([x[0, 2], x[1, 4]]))


def test_attention_pooling_ignores_padding():
    x = RNG.normal(0, 1, (1, 6, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0, 0]])
    pool = layers.AttentionPooling(num_heads=4)
    a = np_(pool(x, padding_mask=mask))
    x2 = x.copy()
    x2[0, 3:] = 1e3
    b = np_(pool(x2, padding_mask=mask))
    assert a.shape == (1, 8)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_get_pooler_rejects_unknown_name():
    with pytest.raises(ValueError, match="Unknown pooling 'max'"):
        layers.get_pooler("max")


def test_projection_head_and_matryoshka():
    x = RNG.normal(0, 1, (3, 8)).astype("float32")
    head = layers.EmbeddingProjectionHead(units=(16, 12))
    head.build(x.shape)
    w1, w2 = RNG.normal(0, 1, (8, 16)), RNG.normal(0, 1, (16, 12))
    head.dense_layers[0].kernel.assign(w1)
    head.dense_layers[1].kernel.assign(w2)
    out = np_(head(x))
    expected = ref.l2_normalize(x @ w1 @ w2)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    for dim in (12, 8, 5, 1):
        small = np_(layers.matryoshka_truncate(out, dim))
        np.testing.assert_allclose(small, ref.l2_normalize(out[:, :dim]), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dim", [0, 13, -1, 2.5, True, None])
def test_matryoshka_rejects_bad_dim(dim):
    with pytest.raises(ValueError, match="Matryoshka `dim`"):
        layers.matryoshka_truncate(np.ones((1, 12), "float32"), dim)


LAYERS = [
    layers.RMSNormalization(epsilon=1e-5),
    layers.EmbeddingGemmaAttention(3, 1, 16, query_pre_attn_scalar=12, sliding_window=8),
    layers.EmbeddingGemmaEncoderBlock(24, 40, 3, 1, 16, sliding_window=8),
    layers.MeanPooling(),
    layers.FirstTokenPooling(),
    layers.LastTokenPooling(),
    layers.AttentionPooling(num_heads=2),
    layers.EmbeddingProjectionHead(units=(16, 8), normalize=False),
    layers.L2Normalization(),
    layers.MatryoshkaTruncation(4),
]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: type(layer).__name__)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == config


@pytest.mark.parametrize("block_size", [8, None])
def test_token_embedding_int4_lookup_equals_keras(block_size):
    """The int4 lookup that unpacks only the gathered rows returns exactly
    what Keras' own int4 `Embedding` (unpack the table, then gather) returns,
    per block and per channel; float and int8 lookups are Keras' own."""
    keras.utils.set_random_seed(0)
    layer = gather_int4_rows_first(keras.layers.Embedding(input_dim=50, output_dim=32))
    layer.build()
    ids = np.array([[0, 3, 49, 3], [7, 7, 1, 22]], "int32")
    float_rows = keras.ops.convert_to_numpy(layer(ids))
    np.testing.assert_array_equal(
        float_rows, keras.ops.convert_to_numpy(layer.embeddings)[ids]
    )
    layer.quantize("int4", config=keras.quantizers.Int4QuantizationConfig(block_size=block_size))
    ours = keras.ops.convert_to_numpy(layer(ids))
    theirs = keras.ops.convert_to_numpy(keras.layers.Embedding._int4_call(layer, ids))
    assert ours.shape == (2, 4, 32)
    np.testing.assert_array_equal(ours, theirs)
    # int4 is visible but close: within half a quantisation step of the float rows.
    assert 0 < np.abs(ours - float_rows).max() < 0.5 * np.abs(float_rows).max() / 7 + 1e-6
