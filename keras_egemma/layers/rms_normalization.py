import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_egemma")
class RMSNormalization(keras.layers.Layer):
    """Gemma's root-mean-square normalisation with a zero-centred scale.

    Computes `x * rsqrt(mean(x**2) + epsilon) * (1 + scale)` over the last
    axis in float32 whatever the layer's dtype, then casts back. The scale is
    stored zero-centred, as in the published checkpoints, so a freshly built
    layer is the identity normalisation.

    Args:
        epsilon: float. Added to the mean square. Defaults to `1e-6`.

    Shapes:
        input `(..., d)` -> output `(..., d)`.

    Example:
    ```python
    norm = keras_egemma.layers.RMSNormalization()
    y = norm(np.random.rand(2, 5, 8).astype("float32"))   # (2, 5, 8)
    ```
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale",
            shape=(input_shape[-1],),
            initializer="zeros",
            trainable=True,
        )
        self.built = True

    def call(self, x):
        x = ops.cast(x, "float32")
        mean_square = ops.mean(ops.square(x), axis=-1, keepdims=True)
        x = x * ops.rsqrt(mean_square + self.epsilon)
        x = x * (1.0 + ops.cast(self.scale, "float32"))
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config
