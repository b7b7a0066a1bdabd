import math

import keras
from keras import ops
from keras_hub.models import Backbone

from keras_egemma.layers.encoder_block import EmbeddingGemmaEncoderBlock
from keras_egemma.layers.int4_row_lookup import gather_int4_rows_first
from keras_egemma.layers.rms_normalization import RMSNormalization
from keras_egemma.models.dtypes import check_dtype

SLIDING = "sliding_attention"
FULL = "full_attention"


def default_layer_types(num_layers, pattern=6):
    """Gemma 3's interleaving: `pattern - 1` sliding layers, then one global."""
    return [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(num_layers)]


@keras.saving.register_keras_serializable(package="keras_egemma")
class EmbeddingGemmaBackbone(Backbone):
    """The EmbeddingGemma encoder: token ids and padding mask -> token embeddings.

    A Gemma 3 text stack with bidirectional attention: token embeddings
    scaled by `sqrt(hidden_dim)` (no position embeddings; RoPE inside
    attention), `num_layers` encoder blocks interleaving sliding-window and
    global layers, and a final RMSNorm. Padded positions still get (finite)
    outputs; pool with the padding mask.

    Args:
        vocabulary_size: int. Size of the token vocabulary (262144 published).
        num_layers: int. Number of encoder blocks (24).
        num_query_heads: int. Query heads per layer (3).
        num_key_value_heads: int. Key/value heads per layer (1).
        hidden_dim: int. Model width (768).
        intermediate_dim: int. Feed-forward width (1152).
        head_dim: int. Size of each attention head (256).
        query_pre_attn_scalar: float. Scores are scaled by its inverse square
            root (256). Defaults to `head_dim`.
        layer_types: list of `"sliding_attention"` / `"full_attention"`, one
            per layer. Defaults to five sliding layers then one global,
            repeated.
        sliding_window: int. Window of the sliding layers as serialised by the
            checkpoints (512); a token sees `sliding_window // 2` tokens on
            each side.
        global_rope_wavelength: float. RoPE base of the global layers (1e6).
        local_rope_wavelength: float. RoPE base of the sliding layers (1e4).
        layer_norm_epsilon: float. Epsilon of every RMSNorm (1e-6).
        dropout: float. Dropout rate in training. Defaults to `0`.
        dtype: `"float32"` (default) or `"bfloat16"`, or a Keras dtype policy.
            float16 is refused: the activations reach ~8e5.

    Inputs:
        `{"token_ids": (batch, length) int, "padding_mask": (batch, length)}`.
    Output:
        `(batch, length, hidden_dim)` token embeddings.

    Example:
    ```python
    backbone = keras_egemma.EmbeddingGemmaBackbone(
        vocabulary_size=1000, num_layers=6, num_query_heads=3,
        num_key_value_heads=1, hidden_dim=48, intermediate_dim=96,
        head_dim=16, sliding_window=8,
    )
    tokens = backbone({
        "token_ids": np.array([[2, 17, 38, 1, 0]]),
        "padding_mask": np.array([[1, 1, 1, 1, 0]]),
    })   # (1, 5, 48)
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
        query_pre_attn_scalar=None,
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
        if query_pre_attn_scalar is None:
            query_pre_attn_scalar = head_dim
        if layer_types is None:
            layer_types = default_layer_types(num_layers)
        layer_types = list(layer_types)
        if len(layer_types) != num_layers or set(layer_types) - {SLIDING, FULL}:
            raise ValueError(
                f"`layer_types` must list {num_layers} entries, each "
                f"{SLIDING!r} or {FULL!r}. Received: {layer_types}"
            )

        # === Layers ===
        self.token_embedding = gather_int4_rows_first(
            keras.layers.Embedding(
                input_dim=vocabulary_size,
                output_dim=hidden_dim,
                embeddings_initializer=keras.initializers.VarianceScaling(
                    scale=1.0, mode="fan_in", distribution="untruncated_normal"
                ),
                dtype=dtype,
                name="token_embedding",
            )
        )
        self.transformer_layers = []
        for i, layer_type in enumerate(layer_types):
            sliding = layer_type == SLIDING
            self.transformer_layers.append(
                EmbeddingGemmaEncoderBlock(
                    hidden_dim=hidden_dim,
                    intermediate_dim=intermediate_dim,
                    num_query_heads=num_query_heads,
                    num_key_value_heads=num_key_value_heads,
                    head_dim=head_dim,
                    query_pre_attn_scalar=query_pre_attn_scalar,
                    sliding_window=sliding_window if sliding else None,
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
            epsilon=layer_norm_epsilon, dtype=dtype, name="final_normalization"
        )

        # The scale is cast to the weight dtype first, as the reference does
        # (sqrt(768) is 27.7128 in float32 and 27.75 in bfloat16). It enters
        # the graph as a Python float (exact in that dtype), not as a tensor
        # made here: a traced TF function captures such a tensor, and tf2onnx
        # turns the capture into an extra ONNX model input.
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
        self.query_pre_attn_scalar = query_pre_attn_scalar
        self.layer_types = layer_types
        self.sliding_window = sliding_window
        self.global_rope_wavelength = global_rope_wavelength
        self.local_rope_wavelength = local_rope_wavelength
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout

    def _encode(self, token_ids, padding_mask, training=None):
        x = self.token_embedding(token_ids) * self.embedding_scale
        for block in self.transformer_layers:
            x = block(x, padding_mask=padding_mask, training=training)
        return self.final_norm(x)

    def call(self, inputs, training=None, mask=None):
        # Layer by layer, not through Keras' functional graph runner: that
        # keeps every block's output until the whole graph has run, which in
        # eager PyTorch holds all the blocks' activations at once.
        return self._encode(inputs["token_ids"], inputs["padding_mask"], training=training)

    def enable_lora(self, rank, target_layer_names=None):
        """Refused: LoRA is enabled on the `EmbeddingGemma` model.

        KerasHub's `Backbone.enable_lora` would adapt only the query and
        value kernels, outside the model's LoRA settings, so its adapters
        would be neither saved (`save_lora_weights`) nor merged as the
        model's. `EmbeddingGemma.enable_lora(rank)` adapts every attention
        and feed-forward kernel of this backbone.
        """
        raise ValueError(
            "LoRA is enabled on the model, not on its backbone: call "
            f"`model.enable_lora({rank!r})` on the `EmbeddingGemma` that holds this backbone "
            "(for a backbone alone: `EmbeddingGemma(backbone, preprocessor).enable_lora(rank)`). "
            "It adapts every attention and feed-forward kernel and saves the adapters with "
            "`model.save_lora_weights`."
        )

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
                "query_pre_attn_scalar": self.query_pre_attn_scalar,
                "layer_types": list(self.layer_types),
                "sliding_window": self.sliding_window,
                "global_rope_wavelength": self.global_rope_wavelength,
                "local_rope_wavelength": self.local_rope_wavelength,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "dropout": self.dropout,
            }
        )
        return config
