import keras

from keras_egemma.layers.attention import EmbeddingGemmaAttention
from keras_egemma.layers.projection import project
from keras_egemma.layers.rms_normalization import RMSNormalization


@keras.saving.register_keras_serializable(package="keras_egemma")
class EmbeddingGemmaEncoderBlock(keras.layers.Layer):
    """One Gemma 3 block with bidirectional attention.

    `h = x + post_attention_norm(attention(pre_attention_norm(x)))`, then
    `y = h + post_ffw_norm(mlp(pre_ffw_norm(h)))` with the GeGLU feed-forward
    `mlp(h) = ffw_linear(gelu_tanh(ffw_gating(h)) * ffw_gating_2(h))`.

    Args:
        hidden_dim: int. Model width.
        intermediate_dim: int. Feed-forward width.
        num_query_heads, num_key_value_heads, head_dim, query_pre_attn_scalar,
        sliding_window, rope_max_wavelength: see `EmbeddingGemmaAttention`.
        layer_norm_epsilon: float. Epsilon of the four norms and QK-norms.
        dropout: float. Dropout after attention and feed-forward in training.
        zero_centered_norms, value_norm: the Gemma 4 variants of the norms;
            see `EmbeddingGemmaAttention`.

    Shapes:
        `x`: `(batch, length, hidden_dim)`; `padding_mask`: `(batch, length)`.
        Output: `(batch, length, hidden_dim)`.

    Example:
    ```python
    block = EmbeddingGemmaEncoderBlock(
        hidden_dim=48, intermediate_dim=96, num_query_heads=3,
        num_key_value_heads=1, head_dim=16, sliding_window=8,
    )
    y = block(np.random.rand(2, 20, 48), padding_mask=np.ones((2, 20)))
    ```
    """

    def __init__(
        self,
        hidden_dim,
        intermediate_dim,
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
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.query_pre_attn_scalar = query_pre_attn_scalar
        self.sliding_window = sliding_window
        self.rope_max_wavelength = rope_max_wavelength
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.zero_centered_norms = zero_centered_norms
        self.value_norm = value_norm

        policy = self.dtype_policy

        def norm(name):
            return RMSNormalization(
                epsilon=layer_norm_epsilon,
                zero_centered=zero_centered_norms,
                dtype=policy,
                name=name,
            )

        def dense(equation, width, name):
            return keras.layers.EinsumDense(
                equation, output_shape=(None, width), dtype=policy, name=name
            )

        self.pre_attention_norm = norm("pre_attention_norm")
        self.attention = EmbeddingGemmaAttention(
            num_query_heads=num_query_heads,
            num_key_value_heads=num_key_value_heads,
            head_dim=head_dim,
            query_pre_attn_scalar=query_pre_attn_scalar,
            sliding_window=sliding_window,
            rope_max_wavelength=rope_max_wavelength,
            layer_norm_epsilon=layer_norm_epsilon,
            dropout=dropout,
            zero_centered_norms=zero_centered_norms,
            value_norm=value_norm,
            dtype=policy,
            name="attention",
        )
        self.post_attention_norm = norm("post_attention_norm")
        self.pre_ffw_norm = norm("pre_ffw_norm")
        self.ffw_gating = dense("btd,df->btf", intermediate_dim, "ffw_gating")
        self.ffw_gating_2 = dense("btd,df->btf", intermediate_dim, "ffw_gating_2")
        self.ffw_linear = dense("btf,fd->btd", hidden_dim, "ffw_linear")
        self.post_ffw_norm = norm("post_ffw_norm")
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=policy)

    def build(self, input_shape):
        for layer in (
            self.pre_attention_norm,
            self.attention,
            self.post_attention_norm,
            self.pre_ffw_norm,
            self.ffw_gating,
            self.ffw_gating_2,
            self.post_ffw_norm,
        ):
            layer.build(input_shape)
        self.ffw_linear.build((None, None, self.intermediate_dim))
        self.built = True

    def call(self, x, padding_mask=None, training=None):
        attended = self.attention(
            self.pre_attention_norm(x), padding_mask=padding_mask, training=training
        )
        attended = self.dropout_layer(attended, training=training)
        h = x + self.post_attention_norm(attended)

        normed = self.pre_ffw_norm(h)
        gate = keras.activations.gelu(project(self.ffw_gating, normed), approximate=True)
        ffw = project(self.ffw_linear, gate * project(self.ffw_gating_2, normed))
        ffw = self.dropout_layer(ffw, training=training)
        return h + self.post_ffw_norm(ffw)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
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
