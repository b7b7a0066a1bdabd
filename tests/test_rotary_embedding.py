"""RoPE against transformers' own rotary modules in float32, at positions up to 8,191.

At position 8,191 the float32 angle has a unit in the last place of ~5e-4, so
a frequency rounded one unit differently shows as ~1e-4 in cos/sin: the
reference is transformers' computation itself (``EmbeddingGemma2RotaryEmbedding``
and ``Gemma3RotaryEmbedding`` with ``rotate_half``), not a float64 ideal.
KerasHub's ``RotaryEmbedding`` (``base ** -exponent``) misses by 1e-4 to 2e-3 here.

Not covered: transformers' frequencies come from torch's vectorised ``pow``,
which rounds a few near-ties the other way (3 of the 256 frequencies of the
published global layers, head 512, base 1e6: 1.2e-4 in cos at 8,191); ours are
rounded to nearest, as torch's scalar ``pow`` gives them.
"""

import keras
import numpy as np
import pytest
import torch
from transformers import EmbeddingGemma2TextConfig
from transformers import Gemma3TextConfig
from transformers.models.embedding_gemma2.modeling_embedding_gemma2 import (
    EmbeddingGemma2RotaryEmbedding,
)
from transformers.models.embedding_gemma2.modeling_embedding_gemma2 import apply_rotary_pos_emb
from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding

from keras_egemma import layers
from keras_egemma.layers.rotary_embedding import inverse_frequencies

LENGTH = 8192
SLIDING, FULL = "sliding_attention", "full_attention"
TOLERANCE = 2e-6


def np_(x):
    return keras.ops.convert_to_numpy(x)


def transformers_cos_sin(model, head_dim, base):
    """float32 `(cos, sin)`, `(LENGTH, head_dim)`, from transformers' rotary module."""
    layer_types = [SLIDING, FULL]
    rope = {SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
            FULL: {"rope_type": "default", "rope_theta": 1_000_000.0}}
    layer_type = SLIDING if base == 10_000.0 else FULL
    common = dict(vocab_size=8, hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                  layer_types=layer_types, rope_parameters=rope,
                  max_position_embeddings=LENGTH)
    if model == "gemma3":
        module = Gemma3RotaryEmbedding(Gemma3TextConfig(head_dim=head_dim, **common))
    else:
        module = EmbeddingGemma2RotaryEmbedding(EmbeddingGemma2TextConfig(
            head_dim=head_dim, global_head_dim=head_dim, **common))
    x = torch.zeros(1, dtype=torch.float32)
    cos, sin = module(x, torch.arange(LENGTH)[None], layer_type)
    return cos, sin


# (model, head size, base): the tiny test checkpoints' sliding (8) and global (16)
# heads, and the published head of Gemma 3's layers and of EmbeddingGemma 2's sliding layers.
CASES = [
    ("embedding_gemma2", 8, 10_000.0),
    ("embedding_gemma2", 16, 1_000_000.0),
    ("embedding_gemma2", 256, 10_000.0),
    ("gemma3", 256, 10_000.0),
    ("gemma3", 256, 1_000_000.0),
]


@pytest.mark.parametrize("model,head_dim,base", CASES)
def test_cos_sin_match_transformers_to_position_8191(model, head_dim, base):
    cos, sin = transformers_cos_sin(model, head_dim, base)
    ours_cos, ours_sin = layers.RotaryEmbedding(base).cos_sin(LENGTH, head_dim)
    np.testing.assert_allclose(np_(ours_cos), cos[0].numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(np_(ours_sin), sin[0].numpy(), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("model,head_dim,base", CASES)
def test_attention_rotates_queries_as_transformers(model, head_dim, base):
    attention = layers.EmbeddingGemmaAttention(
        num_query_heads=2, num_key_value_heads=1, head_dim=head_dim,
        rope_max_wavelength=base,
    )
    attention.build((None, None, 8))
    q = np.random.default_rng(0).normal(size=(1, LENGTH, 2, head_dim)).astype("float32")
    cos, sin = transformers_cos_sin(model, head_dim, base)
    # transformers rotates (batch, heads, length, head_dim); ours is (batch, length, heads, head_dim).
    q_t = torch.from_numpy(q).transpose(1, 2)
    expected, _ = apply_rotary_pos_emb(q_t, q_t, cos, sin)
    np.testing.assert_allclose(
        np_(attention.rope(q)), expected.transpose(1, 2).numpy(), atol=4 * TOLERANCE, rtol=0
    )


def test_inverse_frequencies_are_transformers_order_of_rounding():
    # 1 / (1e4 ** (2/8)) = 0.1 exactly in reals; float32 rounding of each step shows.
    frequencies = inverse_frequencies(8, 10_000.0)
    assert frequencies.dtype == np.float32
    np.testing.assert_array_equal(
        frequencies, np.float32(1) / np.float32([1.0, 10.0, 100.0, 1000.0])
    )
    with pytest.raises(ValueError, match="even head size"):
        inverse_frequencies(7, 10_000.0)


def test_bfloat16_output_and_config_round_trip():
    rope = layers.RotaryEmbedding(1_000_000.0, dtype="bfloat16")
    x = np.ones((1, 5, 2, 8), "float32")
    assert keras.backend.standardize_dtype(rope(x).dtype) == "bfloat16"
    again = layers.RotaryEmbedding.from_config(rope.get_config())
    assert again.max_wavelength == 1_000_000.0
