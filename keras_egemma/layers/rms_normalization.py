import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_egemma")
class RMSNormalization(keras.layers.Layer):
    """Gemma's root-mean-square normalisation with a zero-centred scale.

    Computes `x * rsqrt(mean(x**2) + epsilon) * (1 + scale)` over the last
    axis in float32 whatever the layer's dtype, then casts back. The scale is
    stored zero-centred, as in the published checkpoints, so a freshly built
    layer is the identity normalisation.

    Gemma 4 (EmbeddingGemma 2) stores the scale itself (`* scale`, initialised
    to ones: `zero_centered=False`), and normalises values without any scale
    (`use_scale=False`).

    Args:
        epsilon: float. Added to the mean square. Defaults to `1e-6`.
        zero_centered: bool. Multiply by `1 + scale` (Gemma 3) rather than by
            `scale` (Gemma 4). Defaults to `True`.
        use_scale: bool. Learn a scale at all. Defaults to `True`.

    Shapes:
        input `(..., d)` -> output `(..., d)`.

    Example:
    ```python
    norm = keras_egemma.layers.RMSNormalization()
    y = norm(np.random.rand(2, 5, 8).astype("float32"))   # (2, 5, 8)
    ```
    """

    def __init__(self, epsilon=1e-6, zero_centered=True, use_scale=True, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.zero_centered = zero_centered
        self.use_scale = use_scale

    def build(self, input_shape):
        if self.use_scale:
            self.scale = self.add_weight(
                name="scale",
                shape=(input_shape[-1],),
                initializer="zeros" if self.zero_centered else "ones",
                trainable=True,
            )
        self.built = True

    def call(self, x):
        x = ops.cast(x, "float32")
        mean_square = ops.mean(ops.square(x), axis=-1, keepdims=True)
        x = x * ops.rsqrt(mean_square + self.epsilon)
        if self.use_scale:
            scale = ops.cast(self.scale, "float32")
            x = x * (1.0 + scale if self.zero_centered else scale)
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        # Written only when not the default, so Gemma 3 configs stay as they were.
        if not self.zero_centered:
            config["zero_centered"] = False
        if not self.use_scale:
            config["use_scale"] = False
        return config
