import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_egemma")
class AttentionPooling(keras.layers.Layer):
    """Multi-head attention from one learned query to the tokens.

    The paper's ablation pooler: a learned query vector attends, with
    `num_heads` heads, to the non-pad token embeddings; the attended vector is
    the pooled embedding.

    Args:
        num_heads: int. Number of attention heads; divides the model width.
            Defaults to `4`.

    Shapes:
        `x`: `(batch, length, d)`; `padding_mask`: `(batch, length)`.
        Output: `(batch, d)`.

    Example:
    ```python
    pool = AttentionPooling(num_heads=4)
    pool(np.random.rand(2, 6, 16), padding_mask=np.ones((2, 6)))   # (2, 16)
    ```
    """

    def __init__(self, num_heads=4, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(
                f"AttentionPooling: width {hidden_dim} is not divisible by "
                f"num_heads={self.num_heads}."
            )
        self.query = self.add_weight(
            name="query",
            shape=(1, 1, hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=hidden_dim // self.num_heads,
            dtype=self.dtype_policy,
            name="attention",
        )
        self.attention.build(
            (None, 1, hidden_dim), (None, None, hidden_dim), (None, None, hidden_dim)
        )
        self.built = True

    def call(self, x, padding_mask):
        batch = ops.shape(x)[0]
        query = ops.broadcast_to(
            ops.cast(self.query, x.dtype), (batch, 1, ops.shape(x)[-1])
        )
        mask = ops.cast(padding_mask, "bool")[:, None, :]
        pooled = self.attention(query, x, x, attention_mask=mask)
        return pooled[:, 0, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads})
        return config
