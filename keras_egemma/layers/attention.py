import keras
from keras import ops

from keras_egemma.layers.attention_kernels import band_is_cheaper
from keras_egemma.layers.attention_kernels import dense_attention
from keras_egemma.layers.attention_kernels import sliding_window_band_attention
from keras_egemma.layers.attention_kernels import sliding_window_mask
from keras_egemma.layers.projection import project
from keras_egemma.layers.rms_normalization import RMSNormalization
from keras_egemma.layers.rotary_embedding import RotaryEmbedding


def _static(dim):
    """A sequence length as a Python int, or `None` while it is symbolic."""
    return dim if isinstance(dim, int) else None


@keras.saving.register_keras_serializable(package="keras_egemma")
class EmbeddingGemmaAttention(keras.layers.Layer):
    """Bidirectional grouped-query attention of the EmbeddingGemma encoder.

    Projections without bias; per-head RMSNorm on queries and keys (QK-norm)
    before rotary embeddings (rotate-half); scores scaled by
    `query_pre_attn_scalar ** -0.5`; softmax in float32; `num_key_value_heads`
    key/value heads shared by groups of query heads. Every token attends to
    every non-pad token, or, when `sliding_window` is set, to the non-pad
    tokens within `sliding_window // 2` positions on either side.

    Args:
        num_query_heads: int. Number of query heads.
        num_key_value_heads: int. Number of key/value heads; divides
            `num_query_heads`.
        head_dim: int. Size of each head.
        query_pre_attn_scalar: float. Scores are scaled by its inverse square
            root. Defaults to `head_dim`.
        sliding_window: int or `None`. The window of a sliding layer as the
            checkpoints serialise it (512 for the published model); `None` for
            a global layer.
        rope_max_wavelength: float. RoPE base (1e4 sliding, 1e6 global).
        layer_norm_epsilon: float. Epsilon of the QK-norms.
        dropout: float. Dropout on the attention probabilities in training.
        zero_centered_norms: bool. QK-norm scales stored zero-centred
            (Gemma 3, `True`) or as the factor itself (Gemma 4, `False`); see
            `RMSNormalization`.
        value_norm: bool. Also RMS-normalise each value head, without a scale
            (Gemma 4). Defaults to `False`.

    Shapes:
        `x`: `(batch, length, hidden_dim)`; `padding_mask`: `(batch, length)`,
        true or 1 for real tokens. Output: `(batch, length, hidden_dim)`.

    Example:
    ```python
    attention = EmbeddingGemmaAttention(
        num_query_heads=3, num_key_value_heads=1, head_dim=16,
        sliding_window=8,
    )
    y = attention(np.random.rand(2, 20, 48), padding_mask=np.ones((2, 20)))
    ```
    """

    def __init__(
        self,
        num_query_heads,
        num_key_value_heads,
        head_dim,
        query_pre_attn_scalar=None,
        sliding_window=None,
        rope_max_wavelength=10_000.0,
        layer_norm_epsilon=1e-6,
        dropout=0.0,
        zero_centered_norms=True,
        value_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_query_heads % num_key_value_heads:
            raise ValueError(
                f"`num_query_heads` ({num_query_heads}) must be a multiple of "
                f"`num_key_value_heads` ({num_key_value_heads})."
            )
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.query_pre_attn_scalar = (
            head_dim if query_pre_attn_scalar is None else query_pre_attn_scalar
        )
        self.sliding_window = sliding_window
        self.rope_max_wavelength = rope_max_wavelength
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.zero_centered_norms = zero_centered_norms
        self.value_norm = value_norm

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        policy = self.dtype_policy

        def projection(equation, heads, name):
            layer = keras.layers.EinsumDense(
                equation,
                output_shape=(None, heads, self.head_dim),
                dtype=policy,
                name=name,
            )
            layer.build(input_shape)
            return layer

        self.query_dense = projection("btd,ndh->btnh", self.num_query_heads, "query")
        self.key_dense = projection("bsd,kdh->bskh", self.num_key_value_heads, "key")
        self.value_dense = projection(
            "bsd,kdh->bskh", self.num_key_value_heads, "value"
        )
        def norm(heads, name, use_scale=True):
            layer = RMSNormalization(
                epsilon=self.layer_norm_epsilon,
                zero_centered=self.zero_centered_norms,
                use_scale=use_scale,
                dtype=policy,
                name=name,
            )
            layer.build((None, None, heads, self.head_dim))
            return layer

        self.query_norm = norm(self.num_query_heads, "query_norm")
        self.key_norm = norm(self.num_key_value_heads, "key_norm")
        self.value_norm_layer = (
            norm(self.num_key_value_heads, "value_norm", use_scale=False)
            if self.value_norm else None
        )
        self.output_dense = keras.layers.EinsumDense(
            "btnh,nhd->btd",
            output_shape=(None, hidden_dim),
            dtype=policy,
            name="attention_output",
        )
        self.output_dense.build((None, None, self.num_query_heads, self.head_dim))
        self.rope = RotaryEmbedding(
            max_wavelength=self.rope_max_wavelength, dtype=policy
        )
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=policy)
        self.built = True

    def attention_mask(self, padding_mask):
        """`(batch, length)` padding mask -> broadcastable key mask.

        `(batch, 1, 1, 1, length)` on global layers and
        `(batch, 1, 1, length, length)` on sliding layers.
        """
        key_mask = ops.cast(padding_mask, "bool")[:, None, None, None, :]
        if self.sliding_window is None:
            return key_mask
        length = ops.shape(padding_mask)[1]
        window = sliding_window_mask(length, self.sliding_window)
        return ops.logical_and(key_mask, window[None, None, None, :, :])

    def call(self, x, padding_mask=None, training=None):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        if padding_mask is None:
            padding_mask = ops.ones((batch, length), "bool")
        query = self.rope(self.query_norm(project(self.query_dense, x)))
        key = self.rope(self.key_norm(project(self.key_dense, x)))
        value = project(self.value_dense, x)
        if self.value_norm_layer is not None:
            value = self.value_norm_layer(value)

        groups = self.num_query_heads // self.num_key_value_heads
        query = query * ops.cast(self.query_pre_attn_scalar**-0.5, query.dtype)
        query = ops.reshape(
            query, (batch, length, self.num_key_value_heads, groups, self.head_dim)
        )
        dropout = (lambda p: self.dropout_layer(p, training=training)) if (
            training and self.dropout) else None
        if self.sliding_window is not None and band_is_cheaper(
                _static(length), self.sliding_window):
            out = sliding_window_band_attention(
                query, key, value, padding_mask, self.sliding_window, dropout=dropout
            )
        else:
            out = dense_attention(
                query, key, value, self.attention_mask(padding_mask), dropout=dropout
            )
        out = ops.reshape(out, (batch, length, self.num_query_heads, self.head_dim))
        return project(self.output_dense, out)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_query_heads": self.num_query_heads,
                "num_key_value_heads": self.num_key_value_heads,
                "head_dim": self.head_dim,
                "query_pre_attn_scalar": self.query_pre_attn_scalar,
                "sliding_window": self.sliding_window,
                "rope_max_wavelength": self.rope_max_wavelength,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "dropout": self.dropout,
            }
        )
        # Written only when not the default, so Gemma 3 configs stay as they were.
        if not self.zero_centered_norms:
            config["zero_centered_norms"] = False
        if self.value_norm:
            config["value_norm"] = True
        return config
