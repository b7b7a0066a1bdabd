import keras
from keras import ops

# As torch.nn.functional.normalize: x / max(||x||, 1e-12). The floor goes
# under the square root, whose gradient is infinite at 0: clamping after it
# would give 0 * inf = NaN gradients for a zero vector (an all-padding row).
_MIN_SQUARED_NORM = 1e-24


def l2_normalize(x, axis=-1):
    """`x / max(||x||_2, 1e-12)` along `axis`, computed in float32."""
    x = ops.cast(x, "float32")
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x / ops.sqrt(ops.maximum(squared, _MIN_SQUARED_NORM))


@keras.saving.register_keras_serializable(package="keras_egemma")
class L2Normalization(keras.layers.Layer):
    """Scales each vector to unit L2 norm (float32 output).

    Shapes: `(..., d)` -> `(..., d)`.

    Example:
    ```python
    L2Normalization()(np.array([[3.0, 4.0]]))   # [[0.6, 0.8]]
    ```
    """

    def call(self, x):
        return l2_normalize(x)

    def compute_output_shape(self, input_shape):
        return input_shape
