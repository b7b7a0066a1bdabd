import math

import keras
from keras import ops
from keras_hub.models import Backbone

from keras_egemma.layers.per_layer_embedding import PerLayerEmbedding
from keras_egemma.layers.ple_encoder_block import EmbeddingGemma2EncoderBlock
from keras_egemma.layers.rms_normalization import RMSNormalization
from keras_egemma.models.backbone import FULL
from keras_egemma.models.backbone import SLIDING
from keras_egemma.models.backbone import default_layer_types
from keras_egemma.models.dtypes import check_dtype


@keras.saving.register_keras_serializable(package="keras_egemma")
class EmbeddingGemma2Backbone(Backbone):
    """The EmbeddingGemma 2 text encoder: token ids and padding mask -> token states.

    A Gemma 4 text stack with bidirectional attention: token embeddings
    scaled by `sqrt(hidden_dim)`, the projection-only per-layer embeddings
    (`PerLayerEmbedding`) computed from them, `num_layers`
    `EmbeddingGemma2EncoderBlock`s (each gated by its PLE slice), and a
    final RMSNorm. Sliding layers see `|i - j| <= sliding_window` (a radius:
    512 means 1,025 tokens wide); global layers attend everywhere with their
    own head size and key/value head count. The model's
    `embedding_projection` (hidden -> 768) is linear, so `EmbeddingGemma`
    applies it after pooling, as the first layer of its projection head.

    Args:
        vocabulary_size: int. Size of the token vocabulary (262144 published).
        num_layers: int. Number of encoder blocks (24).
        num_query_heads: int. Query heads per layer (4).
        num_key_value_heads: int. Key/value heads of the sliding layers (2).
        hidden_dim: int. Model width (512).
        intermediate_dim: int. Feed-forward width (2048).
        head_dim: int. Head size of the sliding layers (256).
        global_head_dim: int. Head size of the global layers (512).
        num_global_key_value_heads: int. Key/value heads of the global
            layers (1).
        per_layer_dim: int. Width of each layer's PLE signal (512).
        layer_types: list of `"sliding_attention"` / `"full_attention"`.
            Defaults to five sliding layers then one global, repeated; the
            last layer must be global.
        sliding_window: int. The window's radius (512).
        global_rope_wavelength: float. RoPE base of the global layers (1e6).
        local_rope_wavelength: float. RoPE base of the sliding layers (1e4).
        layer_norm_epsilon: float. Epsilon of every RMSNorm (1e-6).
        dropout: float. Dropout rate in training. Defaults to `0`.
        dtype: `"float32"` (default) or `"bfloat16"`, or a Keras dtype policy.

    Inputs:
        `{"token_ids": (batch, length) int, "padding_mask": (batch, length)}`.
    Output:
        `(batch, length, hidden_dim)` token states (before the embedding
        projection).

    Example:
    ```python
    backbone = keras_egemma.EmbeddingGemma2Backbone(
        vocabulary_size=1000, num_layers=2, num_query_heads=4,
        num_key_value_heads=2, hidden_dim=32, intermediate_dim=48,
        head_dim=8, global_head_dim=16, num_global_key_value_heads=1,
        per_layer_dim=16, layer_types=["sliding_attention", "full_attention"],
        sliding_window=4,
    )
    tokens = backbone({
        "token_ids": np.array([[2, 17, 38, 1, 0]]),
        "padding_mask": np.array([[1, 1, 1, 1, 0]]),
    })   # (1, 5, 32)
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_query_heads,
        num_key_value_heads,
        hidden_dim,
        intermediate_dim,
        head_dim,
        global_head_dim,
        num_global_key_value_heads,
        per_layer_dim,
        layer_types=None,
        sliding_window=512,
        global_rope_wavelength=1_000_000.0,
        local_rope_wavelength=10_000.0,
        layer_norm_epsilon=1e-6,
        dropout=0.0,
        dtype=None,
        **kwargs,
    ):
        check_dtype(dtype)
        if layer_types is None:
            layer_types = default_layer_types(num_layers)
            layer_types[-1] = FULL
        layer_types = list(layer_types)
        if len(layer_types) != num_layers or set(layer_types) - {SLIDING, FULL}:
            raise ValueError(
                f"`layer_types` must list {num_layers} entries, each "
                f"{SLIDING!r} or {FULL!r}. Received: {layer_types}"
            )
        if layer_types[-1] != FULL:
            raise ValueError(
                f"The last layer of EmbeddingGemma 2 is a global one ({FULL!r}); "
                f"`layer_types` ends with {layer_types[-1]!r}."
            )

        # === Layers ===
        self.token_embedding = keras.layers.Embedding(
            input_dim=vocabulary_size,
            output_dim=hidden_dim,
            embeddings_initializer=keras.initializers.VarianceScaling(
                scale=1.0, mode="fan_in", distribution="untruncated_normal"
            ),
            dtype=dtype,
            name="token_embedding",
        )
        self.per_layer_embedding = PerLayerEmbedding(
            num_layers=num_layers,
            per_layer_dim=per_layer_dim,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
            name="per_layer_embedding",
        )
        self.transformer_layers = []
        for i, layer_type in enumerate(layer_types):
            sliding = layer_type == SLIDING
            self.transformer_layers.append(
                EmbeddingGemma2EncoderBlock(
                    per_layer_dim=per_layer_dim,
                    hidden_dim=hidden_dim,
                    intermediate_dim=intermediate_dim,
                    num_query_heads=num_query_heads,
                    num_key_value_heads=(
                        num_key_value_heads if sliding else num_global_key_value_heads
                    ),
                    head_dim=head_dim if sliding else global_head_dim,
                    # The QK-norms replace the score scaling (scores * 1).
                    query_pre_attn_scalar=1.0,
                    # The attention layers take the window as Gemma 3
                    # serialises it, a radius of `window // 2`.
                    sliding_window=2 * sliding_window if sliding else None,
                    rope_max_wavelength=(
                        local_rope_wavelength if sliding else global_rope_wavelength
                    ),
                    layer_norm_epsilon=layer_norm_epsilon,
                    dropout=dropout,
                    dtype=dtype,
                    name=f"encoder_block_{i}",
                )
            )
        self.final_norm = RMSNormalization(
            epsilon=layer_norm_epsilon, zero_centered=False, dtype=dtype,
            name="final_normalization",
        )
        # As in `EmbeddingGemmaBackbone`: the scale in the weight dtype, as a
        # Python float.
        scale = ops.cast(math.sqrt(hidden_dim), self.token_embedding.compute_dtype)
        self.embedding_scale = float(ops.convert_to_numpy(ops.cast(scale, "float32")))

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        sequence_output = self._encode(token_ids, padding_mask)
        super().__init__(
            inputs={"token_ids": token_ids, "padding_mask": padding_mask},
            outputs=sequence_output,
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.head_dim = head_dim
        self.global_head_dim = global_head_dim
        self.num_global_key_value_heads = num_global_key_value_heads
        self.per_layer_dim = per_layer_dim
        self.layer_types = layer_types
        self.sliding_window = sliding_window
        self.global_rope_wavelength = global_rope_wavelength
        self.local_rope_wavelength = local_rope_wavelength
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout

    def _encode(self, token_ids, padding_mask, training=None):
        x = self.token_embedding(token_ids) * self.embedding_scale
        per_layer_inputs = self.per_layer_embedding(x)
        for i, block in enumerate(self.transformer_layers):
            x = block(
                x, per_layer_inputs[:, :, i, :], padding_mask=padding_mask,
                training=training,
            )
        return self.final_norm(x)

    def call(self, inputs, training=None, mask=None):
        # Layer by layer (see `EmbeddingGemmaBackbone.call`).
        return self._encode(inputs["token_ids"], inputs["padding_mask"], training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "num_layers": self.num_layers,
                "num_query_heads": self.num_query_heads,
                "num_key_value_heads": self.num_key_value_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "head_dim": self.head_dim,
                "global_head_dim": self.global_head_dim,
                "num_global_key_value_heads": self.num_global_key_value_heads,
                "per_layer_dim": self.per_layer_dim,
                "layer_types": list(self.layer_types),
                "sliding_window": self.sliding_window,
                "global_rope_wavelength": self.global_rope_wavelength,
                "local_rope_wavelength": self.local_rope_wavelength,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "dropout": self.dropout,
            }
        )
        return config
