import keras
from keras import ops

from keras_egemma.layers.projection import project
from keras_egemma.layers.rms_normalization import RMSNormalization


@keras.saving.register_keras_serializable(package="keras_egemma")
class PerLayerEmbedding(keras.layers.Layer):
    """EmbeddingGemma 2's projection-only per-layer embeddings (PLE).

    One bias-free projection of the scaled input embeddings to
    `num_layers * per_layer_dim`, multiplied by `hidden_dim ** -0.5`, split
    into one `per_layer_dim` slice per layer, each RMS-normalised with a
    shared (Gemma 4, not zero-centred) scale. The slices gate the PLE
    sub-block of every encoder block (`EmbeddingGemma2EncoderBlock`). There
    is no per-layer token lookup table: the signal comes from the input
    embeddings alone.

    Args:
        num_layers: int. Number of encoder blocks.
        per_layer_dim: int. Width of each layer's slice (512 published).
        layer_norm_epsilon: float. Epsilon of the RMSNorm.

    Shapes:
        `(batch, length, hidden_dim)` -> `(batch, length, num_layers,
        per_layer_dim)`.

    Example:
    ```python
    ple = PerLayerEmbedding(num_layers=2, per_layer_dim=16)
    signal = ple(np.random.rand(1, 5, 32))   # (1, 5, 2, 16)
    ```
    """

    def __init__(self, num_layers, per_layer_dim, layer_norm_epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.num_layers = num_layers
        self.per_layer_dim = per_layer_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.projection = keras.layers.EinsumDense(
            "btd,dlp->btlp",
            output_shape=(None, num_layers, per_layer_dim),
            dtype=self.dtype_policy,
            name="projection",
        )
        self.norm = RMSNormalization(
            epsilon=layer_norm_epsilon, zero_centered=False, dtype=self.dtype_policy,
            name="norm",
        )

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.norm.build((None, None, self.num_layers, self.per_layer_dim))
        self.built = True

    def call(self, x):
        scale = ops.cast(x.shape[-1] ** -0.5, self.compute_dtype)
        return self.norm(project(self.projection, x) * scale)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_layers, self.per_layer_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "per_layer_dim": self.per_layer_dim,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
