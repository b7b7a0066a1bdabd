import keras
from keras import ops

from keras_egemma.layers.encoder_block import EmbeddingGemmaEncoderBlock
from keras_egemma.layers.projection import project
from keras_egemma.layers.rms_normalization import RMSNormalization


@keras.saving.register_keras_serializable(package="keras_egemma")
class EmbeddingGemma2EncoderBlock(EmbeddingGemmaEncoderBlock):
    """One Gemma 4 block of EmbeddingGemma 2: attention, feed-forward, PLE.

    The attention and feed-forward sub-blocks of `EmbeddingGemmaEncoderBlock`
    with Gemma 4's norms (scales not zero-centred, values RMS-normalised),
    then the gated per-layer-embedding sub-block
    `h + ple_norm(ple_projection(gelu_tanh(ple_gate(h)) * per_layer_input))`,
    and finally the whole output times a fixed per-layer scalar
    (`layer_scalar`, a buffer of the checkpoint, not trained).

    Args:
        per_layer_dim: int. Width of the PLE signal (512 published).
        Everything else: see `EmbeddingGemmaEncoderBlock` (`head_dim` and
        `num_key_value_heads` differ between sliding and global layers).

    Shapes:
        `x`: `(batch, length, hidden_dim)`; `per_layer_input`:
        `(batch, length, per_layer_dim)`; `padding_mask`: `(batch, length)`.
        Output: `(batch, length, hidden_dim)`.

    Example:
    ```python
    block = EmbeddingGemma2EncoderBlock(
        per_layer_dim=16, hidden_dim=32, intermediate_dim=48,
        num_query_heads=4, num_key_value_heads=2, head_dim=8,
        query_pre_attn_scalar=1.0, sliding_window=8,
    )
    y = block(np.random.rand(2, 20, 32), np.random.rand(2, 20, 16),
              padding_mask=np.ones((2, 20)))
    ```
    """

    def __init__(self, per_layer_dim, **kwargs):
        kwargs.setdefault("zero_centered_norms", False)
        kwargs.setdefault("value_norm", True)
        super().__init__(**kwargs)
        self.per_layer_dim = per_layer_dim
        policy = self.dtype_policy
        self.ple_gate = keras.layers.EinsumDense(
            "btd,dp->btp", output_shape=(None, per_layer_dim), dtype=policy,
            name="ple_gate",
        )
        self.ple_projection = keras.layers.EinsumDense(
            "btp,pd->btd", output_shape=(None, self.hidden_dim), dtype=policy,
            name="ple_projection",
        )
        self.ple_norm = RMSNormalization(
            epsilon=self.layer_norm_epsilon, zero_centered=self.zero_centered_norms,
            dtype=policy, name="ple_norm",
        )

    def build(self, input_shape):
        super().build(input_shape)
        self.ple_gate.build(input_shape)
        self.ple_projection.build((None, None, self.per_layer_dim))
        self.ple_norm.build(input_shape)
        self.layer_scalar = self.add_weight(
            name="layer_scalar", shape=(1,), initializer="ones", trainable=False
        )
        self.built = True

    def call(self, x, per_layer_input, padding_mask=None, training=None):
        h = super().call(x, padding_mask=padding_mask, training=training)
        gate = keras.activations.gelu(project(self.ple_gate, h), approximate=True)
        h = h + self.ple_norm(project(self.ple_projection, gate * per_layer_input))
        return h * ops.cast(self.layer_scalar, h.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "per_layer_dim": self.per_layer_dim,
                "zero_centered_norms": self.zero_centered_norms,
                "value_norm": self.value_norm,
            }
        )
        return config
