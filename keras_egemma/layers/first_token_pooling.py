import keras


@keras.saving.register_keras_serializable(package="keras_egemma")
class FirstTokenPooling(keras.layers.Layer):
    """The embedding of the first token (`<bos>`), as in the paper's ablation.

    Shapes:
        `x`: `(batch, length, d)`; `padding_mask` is accepted for a uniform
        pooler interface and ignored (the first token is never padding with
        right padding). Output: `(batch, d)`.

    Example:
    ```python
    FirstTokenPooling()(np.random.rand(2, 4, 8), padding_mask=np.ones((2, 4)))
    ```
    """

    def call(self, x, padding_mask=None):
        return x[:, 0, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])
