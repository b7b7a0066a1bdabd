"""Hugging Face / sentence-transformers folder of EmbeddingGemma 2 -> `EmbeddingGemma`.

transformers' `models/embedding_gemma2`: `config.json` is either the text
model's (`model_type: embedding_gemma2_text`, an `EmbeddingGemma2TextModel`
in `model.safetensors`) or the multimodal model's (`embedding_gemma2`, with
the text configuration under `text_config` and the text weights under
`language_model.`; the vision and audio towers are skipped). The text model
ends with `embedding_projection` (hidden -> `embedding_dim`), which is
linear and so is applied after pooling here, as the first layer of the
projection head. The sentence-transformers modules are Transformer ->
Pooling (mean) -> Normalize; a bare transformers folder (no `modules.json`)
gets mean pooling, what the model is documented to be wrapped with.
"""

import logging

from keras_egemma.convert.assign import assign_weight
from keras_egemma.convert.huggingface import _read_dense
from keras_egemma.convert.huggingface import _read_modules
from keras_egemma.convert.huggingface import open_safetensors
from keras_egemma.convert.huggingface import read_json
from keras_egemma.convert.huggingface import read_tokenizer_proto
from keras_egemma.io.errors import CheckpointError
from keras_egemma.io.errors import check_vocabulary_fits
from keras_egemma.models.backbone import FULL
from keras_egemma.models.backbone import SLIDING
from keras_egemma.models.embedding_gemma2_backbone import EmbeddingGemma2Backbone
from keras_egemma.models.preprocessor import EmbeddingGemmaPreprocessor
from keras_egemma.models.prompts import RETRIEVAL_DOCUMENT
from keras_egemma.models.prompts import RETRIEVAL_QUERY
from keras_egemma.models.tokenizer import EmbeddingGemmaTokenizer

TEXT_MODEL_TYPE = "embedding_gemma2_text"
MULTIMODAL_MODEL_TYPE = "embedding_gemma2"
MODEL_TYPES = (TEXT_MODEL_TYPE, MULTIMODAL_MODEL_TYPE)
# The context the model is trained for; the config's max_position_embeddings
# (262144) is RoPE's limit, not a sequence length to pad to.
DEFAULT_SEQUENCE_LENGTH = 8192
_WEIGHT_PREFIXES = ("", "language_model.", "model.language_model.", "model.")
_PER_LAYER_FIELDS = {"head_dim", "num_key_value_heads"}

logger = logging.getLogger(__name__)


def text_config(config):
    """The text model's configuration of either config.json, towers skipped."""
    if config.get("model_type") == MULTIMODAL_MODEL_TYPE:
        towers = [name for name in ("vision_config", "audio_config") if config.get(name)]
        if towers:
            logger.warning(
                "EmbeddingGemma 2: loading the text model only; the %s tower(s) of "
                "this checkpoint are skipped.",
                " and ".join(name.split("_")[0] for name in towers),
            )
        config = config.get("text_config") or {}
    if config.get("model_type", TEXT_MODEL_TYPE) != TEXT_MODEL_TYPE:
        raise CheckpointError(
            f"config.json: the text model has model_type {config.get('model_type')!r}; "
            f"expected {TEXT_MODEL_TYPE!r}."
        )
    return config


def _global_layer_shape(config, layer_types):
    """(head_dim, num_key_value_heads) of the global layers from per_layer_config."""
    overrides = {int(i): dict(v) for i, v in (config.get("per_layer_config") or {}).items()}
    shapes = set()
    for i, layer_type in enumerate(layer_types):
        override = overrides.pop(i, {})
        unknown = set(override) - _PER_LAYER_FIELDS
        if unknown:
            raise CheckpointError(
                f"config.json: per_layer_config of layer {i} sets {sorted(unknown)}; only "
                f"{sorted(_PER_LAYER_FIELDS)} may differ per layer in EmbeddingGemma 2."
            )
        shape = (
            override.get("head_dim", config["head_dim"]),
            override.get("num_key_value_heads", config["num_key_value_heads"]),
        )
        if layer_type == SLIDING:
            if override:
                raise CheckpointError(
                    f"config.json: per_layer_config changes sliding layer {i}; only the "
                    "global layers have their own head size in EmbeddingGemma 2."
                )
        else:
            shapes.add(shape)
    if overrides:
        raise CheckpointError(
            f"config.json: per_layer_config names layers {sorted(overrides)} beyond "
            f"num_hidden_layers ({len(layer_types)})."
        )
    if len(shapes) > 1:
        raise CheckpointError(
            f"config.json: the global layers differ in head size / key-value heads "
            f"({sorted(shapes)}); EmbeddingGemma 2 gives them all one shape."
        )
    return shapes.pop()


def _rope_bases(config):
    params = config.get("rope_parameters") or {}
    bases = {}
    for layer_type, default in ((FULL, 1_000_000.0), (SLIDING, 10_000.0)):
        entry = params.get(layer_type) or {}
        if entry.get("rope_type", "default") != "default":
            raise CheckpointError(
                f"config.json: RoPE type {entry['rope_type']!r} on {layer_type} layers is "
                "not supported; EmbeddingGemma 2 uses plain RoPE."
            )
        bases[layer_type] = float(entry.get("rope_theta", default))
    return bases[FULL], bases[SLIDING]


def backbone_kwargs_from_config(config):
    """`EmbeddingGemma2Backbone` arguments and the embedding size from config.json."""
    config = text_config(config)
    activation = config.get("hidden_activation", "gelu_pytorch_tanh")
    if activation not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise CheckpointError(
            f"config.json: hidden_activation {activation!r} is not supported "
            "(EmbeddingGemma 2 uses gelu_pytorch_tanh)."
        )
    if config.get("attention_bias"):
        raise CheckpointError("config.json: attention_bias must be false for EmbeddingGemma 2.")
    num_layers = config["num_hidden_layers"]
    layer_types = list(config["layer_types"])
    if layer_types[-1] != FULL:
        # transformers forces it too (with a warning) when building the model.
        layer_types[-1] = FULL
    global_head_dim, global_kv_heads = _global_layer_shape(config, layer_types)
    global_base, local_base = _rope_bases(config)
    kwargs = {
        "vocabulary_size": config["vocab_size"],
        "num_layers": num_layers,
        "num_query_heads": config["num_attention_heads"],
        "num_key_value_heads": config["num_key_value_heads"],
        "hidden_dim": config["hidden_size"],
        "intermediate_dim": config["intermediate_size"],
        "head_dim": config["head_dim"],
        "global_head_dim": global_head_dim,
        "num_global_key_value_heads": global_kv_heads,
        "per_layer_dim": config["hidden_size_per_layer_input"],
        "layer_types": layer_types,
        "sliding_window": config["sliding_window"],
        "global_rope_wavelength": global_base,
        "local_rope_wavelength": local_base,
        "layer_norm_epsilon": config.get("rms_norm_eps", 1e-6),
    }
    return kwargs, config["embedding_dim"]


def backbone_weight_plan(backbone, projection):
    """`(HF name, HF shape, model variable, to_ours, to_hf)` for every weight
    of `EmbeddingGemma2TextModel`; `projection` is the Dense layer that holds
    `embedding_projection`."""
    d, f = backbone.hidden_dim, backbone.intermediate_dim
    num_layers, p = backbone.num_layers, backbone.per_layer_dim

    def heads_in(num, h):  # [num*h, d] <-> (num, d, h)
        return (
            lambda w: w.reshape(num, h, d).transpose(0, 2, 1),
            lambda x: x.transpose(0, 2, 1).reshape(num * h, d),
        )

    def heads_out(num, h):  # [d, num*h] <-> (num, h, d)
        return (lambda w: w.T.reshape(num, h, d), lambda x: x.reshape(num * h, d).T)

    same = (lambda w: w, lambda x: x)
    transpose = (lambda w: w.T, lambda x: x.T)
    ple_in = (  # [L*p, d] <-> (d, L, p)
        lambda w: w.T.reshape(d, num_layers, p),
        lambda x: x.reshape(d, num_layers * p).T,
    )

    embeddings = backbone.token_embedding.embeddings
    ple = backbone.per_layer_embedding
    plan = [
        ("embed_tokens.weight", tuple(embeddings.shape), embeddings, *same),
        ("ple.per_layer_model_projection.weight", (num_layers * p, d), ple.projection.kernel,
         *ple_in),
        ("ple.per_layer_projection_norm.weight", (p,), ple.norm.scale, *same),
    ]
    for i, block in enumerate(backbone.transformer_layers):
        pre = f"layers.{i}."
        attention = block.attention
        n, k, h = attention.num_query_heads, attention.num_key_value_heads, attention.head_dim
        plan += [
            (pre + "input_layernorm.weight", (d,), block.pre_attention_norm.scale, *same),
            (pre + "post_attention_layernorm.weight", (d,), block.post_attention_norm.scale,
             *same),
            (pre + "pre_feedforward_layernorm.weight", (d,), block.pre_ffw_norm.scale, *same),
            (pre + "post_feedforward_layernorm.weight", (d,), block.post_ffw_norm.scale, *same),
            (pre + "self_attn.q_proj.weight", (n * h, d), attention.query_dense.kernel,
             *heads_in(n, h)),
            (pre + "self_attn.k_proj.weight", (k * h, d), attention.key_dense.kernel,
             *heads_in(k, h)),
            (pre + "self_attn.v_proj.weight", (k * h, d), attention.value_dense.kernel,
             *heads_in(k, h)),
            (pre + "self_attn.o_proj.weight", (d, n * h), attention.output_dense.kernel,
             *heads_out(n, h)),
            (pre + "self_attn.q_norm.weight", (h,), attention.query_norm.scale, *same),
            (pre + "self_attn.k_norm.weight", (h,), attention.key_norm.scale, *same),
            (pre + "mlp.gate_proj.weight", (f, d), block.ffw_gating.kernel, *transpose),
            (pre + "mlp.up_proj.weight", (f, d), block.ffw_gating_2.kernel, *transpose),
            (pre + "mlp.down_proj.weight", (d, f), block.ffw_linear.kernel, *transpose),
            (pre + "ple_block.per_layer_input_gate.weight", (p, d), block.ple_gate.kernel,
             *transpose),
            (pre + "ple_block.per_layer_projection.weight", (d, p), block.ple_projection.kernel,
             *transpose),
            (pre + "ple_block.post_per_layer_input_norm.weight", (d,), block.ple_norm.scale,
             *same),
            (pre + "layer_scalar", (1,), block.layer_scalar, *same),
        ]
    plan += [
        ("norm.weight", (d,), backbone.final_norm.scale, *same),
        ("embedding_projection.weight", tuple(projection.kernel.shape)[::-1], projection.kernel,
         *transpose),
    ]
    return plan


def _resolve(weights, name):
    for prefix in _WEIGHT_PREFIXES:
        if prefix + name in weights:
            return prefix + name
    raise CheckpointError(
        f"Tensor {name!r} is missing from {weights.path} (looked for it under the prefixes "
        f"{list(_WEIGHT_PREFIXES[1:])} too): the checkpoint is incomplete or is not an "
        "EmbeddingGemma 2 model. Download it again."
    )


def load_backbone_weights(backbone, projection, weights):
    """Copies an `EmbeddingGemma2TextModel`'s tensors into `backbone` and `projection`."""
    for name, expected, variable, to_ours, _ in backbone_weight_plan(backbone, projection):
        key = _resolve(weights, name)
        if weights.shape(key) != expected:
            raise CheckpointError(
                f"Tensor {key!r} in {weights.path} has shape {weights.shape(key)}, but the "
                f"model built from config.json needs {expected}. The weights and config.json "
                "disagree."
            )
        assign_weight(variable, to_ours(weights.get(key)), f"{key!r} in {weights.path}")


def _sequence_length(directory, bert_config):
    """sentence-transformers' max_seq_length: sentence_bert_config.json (5.x) or the
    tokenizer's model_max_length (6.x; a huge sentinel when unset), else 8192."""
    if bert_config.get("max_seq_length"):
        return int(bert_config["max_seq_length"])
    tokenizer_config = read_json(directory, "tokenizer_config.json", required=False) or {}
    length = tokenizer_config.get("model_max_length")
    if isinstance(length, (int, float)) and 0 < length <= 10 * DEFAULT_SEQUENCE_LENGTH:
        return int(length)
    return DEFAULT_SEQUENCE_LENGTH


def load_embedding_gemma2_checkpoint(cls, directory, load_weights=True, dtype=None, **kwargs):
    """Builds an `EmbeddingGemma` of class `cls` from an EmbeddingGemma 2 folder."""
    backbone_kwargs, embedding_dim = backbone_kwargs_from_config(read_json(directory, "config.json"))
    if read_json(directory, "modules.json", required=False) is None:
        pooling, dense = "mean", []
    else:
        pooling, dense_dirs = _read_modules(directory)
        dense = [_read_dense(path) for path in dense_dirs]
    st_config = read_json(directory, "config_sentence_transformers.json", required=False) or {}
    bert_config = read_json(directory, "sentence_bert_config.json", required=False) or {}
    if bert_config.get("do_lower_case"):
        raise CheckpointError("sentence_bert_config.json: do_lower_case is not supported.")

    prompts = dict(st_config.get("prompts") or {})
    if not prompts:
        # Task names still resolve to the first model's table; say so rather than
        # present it as this checkpoint's.
        logger.warning(
            "EmbeddingGemma 2: %s declares no prompts (config_sentence_transformers.json); "
            "encode_query and encode_document use EmbeddingGemma's %r and %r, and other task "
            "names its table. Pass `prompt=` to encode with another.",
            directory, RETRIEVAL_QUERY, RETRIEVAL_DOCUMENT,
        )
    tokenizer = EmbeddingGemmaTokenizer(proto=read_tokenizer_proto(directory))
    check_vocabulary_fits(
        tokenizer.vocabulary_size(), backbone_kwargs["vocabulary_size"],
        f"{directory}: tokenizer", "config.json vocab_size",
    )
    backbone = EmbeddingGemma2Backbone(**backbone_kwargs, dtype=dtype)
    preprocessor = EmbeddingGemmaPreprocessor(
        tokenizer,
        sequence_length=_sequence_length(directory, bert_config),
        prompts=prompts,
    )
    model = cls(
        backbone=backbone,
        preprocessor=preprocessor,
        pooling=pooling,
        projection_units=[embedding_dim] + [units for units, _ in dense],
        **kwargs,
    )
    if load_weights:
        head = model.projection_head.dense_layers
        load_backbone_weights(backbone, head[0], open_safetensors(directory))
        for layer, (_, weights) in zip(head[1:], dense):
            key = "linear.weight"
            if key not in weights:
                raise CheckpointError(f"Tensor {key!r} is missing from {weights.path}.")
            assign_weight(layer.kernel, weights.get(key).T, f"{key!r} in {weights.path}")
    return model
