import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_egemma")
class LastTokenPooling(keras.layers.Layer):
    """The embedding of the last non-pad token (`<eos>` with right padding).

    Works for any padding layout: it takes the highest position whose mask is
    set, so left-padded inputs pool the right token too.

    Shapes:
        `x`: `(batch, length, d)`; `padding_mask`: `(batch, length)`.
        Output: `(batch, d)`.

    Example:
    ```python
    x = np.random.rand(2, 4, 8).astype("float32")
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    LastTokenPooling()(x, padding_mask=mask)   # rows x[0, 2] and x[1, 1]
    ```
    """

    def call(self, x, padding_mask):
        length = ops.shape(x)[1]
        positions = ops.arange(length, dtype="int32")[None, :]
        mask = ops.cast(padding_mask, "bool")
        last = ops.max(ops.where(mask, positions, 0), axis=1)
        selected = ops.equal(positions, last[:, None])[:, :, None]
        return ops.sum(ops.where(selected, x, ops.zeros_like(x)), axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])
