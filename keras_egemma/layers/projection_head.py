import keras

from keras_egemma.layers.l2_normalization import l2_normalize


@keras.saving.register_keras_serializable(package="keras_egemma")
class EmbeddingProjectionHead(keras.layers.Layer):
    """Bias-free dense projections of the pooled vector, then L2 normalisation.

    The published model uses `units=(3072, 768)`: 768 -> 3072 -> 768 with no
    activation between (sentence-transformers' `2_Dense` and `3_Dense`).

    Args:
        units: sequence of ints. Output width of each dense layer, in order.
            An empty sequence gives normalisation only.
        normalize: bool. L2-normalise the output. Defaults to `True`.

    Shapes:
        `(batch, d)` -> `(batch, units[-1])`, float32.

    Example:
    ```python
    head = EmbeddingProjectionHead(units=(3072, 768))
    embeddings = head(np.random.rand(2, 768))   # (2, 768), unit norm
    ```
    """

    def __init__(self, units=(3072, 768), normalize=True, **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        self.normalize = normalize
        self.dense_layers = [
            keras.layers.Dense(
                width, use_bias=False, dtype=self.dtype_policy, name=f"dense_{i}"
            )
            for i, width in enumerate(self.units)
        ]

    def build(self, input_shape):
        shape = input_shape
        for layer in self.dense_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def call(self, x):
        for layer in self.dense_layers:
            x = layer(x)
        return l2_normalize(x) if self.normalize else x

    def compute_output_shape(self, input_shape):
        width = self.units[-1] if self.units else input_shape[-1]
        return (*input_shape[:-1], width)

    def get_config(self):
        config = super().get_config()
        config.update({"units": list(self.units), "normalize": self.normalize})
        return config
