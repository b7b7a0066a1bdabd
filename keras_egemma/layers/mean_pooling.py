import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_egemma")
class MeanPooling(keras.layers.Layer):
    """Mean of the token embeddings over the non-pad tokens, in float32.

    Padded positions are selected away with `where`, not multiplied by zero,
    so even a NaN or Inf in a padded row can never reach the output.

    Shapes:
        `x`: `(batch, length, d)`; `padding_mask`: `(batch, length)`, true or
        1 for real tokens. Output: `(batch, d)`.

    Example:
    ```python
    x = np.random.rand(2, 4, 8).astype("float32")
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    MeanPooling()(x, padding_mask=mask)   # (2, 8)
    ```
    """

    def call(self, x, padding_mask):
        x = ops.cast(x, "float32")
        mask = ops.cast(padding_mask, "bool")[:, :, None]
        total = ops.sum(ops.where(mask, x, 0.0), axis=1)
        count = ops.sum(ops.cast(mask, "float32"), axis=1)
        return ops.cast(total / ops.maximum(count, 1.0), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])
