"""KerasHub `Gemma3Backbone(is_embedding_model=True)` preset -> `EmbeddingGemma`.

The layout of the Kaggle preset `keras/embeddinggemma/keras/embedding_gemma3_300m`:
`config.json` (the `keras_hub>Gemma3Backbone` config), `model.weights.h5`,
`tokenizer.json` and `assets/tokenizer/vocabulary.spm`. KerasHub builds the
model here (without initial values) and reads its weights, and our model
takes over each of its variables' buffers; the forward pass is then ours,
with the reference's symmetric sliding window (KerasHub 0.32 sees one token
fewer on one side).
"""

import contextlib
import os

from keras_egemma import _keras_compat
from keras_egemma.convert.assign import assign_weight
from keras_egemma.convert.huggingface import read_json
from keras_egemma.io.deferred_variables import deferred_variables
from keras_egemma.io.deferred_variables import filling_deferred_variables
from keras_egemma.io.deferred_variables import unassigned
from keras_egemma.io.errors import CheckpointError
from keras_egemma.io.errors import check_vocabulary_fits
from keras_egemma.io.mapped_weights import zero_copy_weight_files
from keras_egemma.models.backbone import FULL
from keras_egemma.models.backbone import SLIDING
from keras_egemma.models.backbone import EmbeddingGemmaBackbone
from keras_egemma.models.preprocessor import EmbeddingGemmaPreprocessor
from keras_egemma.models.tokenizer import EmbeddingGemmaTokenizer

KERAS_HUB_CLASS = "keras_hub>Gemma3Backbone"
VOCABULARY_PATH = os.path.join("assets", "tokenizer", "vocabulary.spm")


def _check(condition, message):
    if not condition:
        raise CheckpointError(f"KerasHub preset config.json: {message}")


def backbone_kwargs_from_keras_hub(config):
    """`EmbeddingGemmaBackbone` arguments from a `Gemma3Backbone` config."""
    _check(config.get("is_embedding_model"), "is_embedding_model is not true.")
    _check(config.get("use_bidirectional_attention"), "attention is not bidirectional.")
    _check(config.get("vision_encoder") is None, "has a vision encoder.")
    _check(config.get("attention_logit_soft_cap") is None, "has an attention soft cap.")
    _check(config.get("use_query_key_norm", True), "has no query/key norm.")
    _check(config.get("use_post_ffw_norm"), "has no post-feed-forward norm.")
    _check(config.get("use_post_attention_norm"), "has no post-attention norm.")
    for key in ("local_rope_scaling_factor", "global_rope_scaling_factor"):
        _check(config.get(key, 1.0) == 1.0, f"{key} is not 1.0.")
    num_layers = config["num_layers"]
    sliding = config.get("use_sliding_window_attention", False)
    head_dim = config["head_dim"]
    return {
        "vocabulary_size": config["vocabulary_size"],
        "num_layers": num_layers,
        "num_query_heads": config["num_query_heads"],
        "num_key_value_heads": config["num_key_value_heads"],
        "hidden_dim": config["hidden_dim"],
        "intermediate_dim": config["intermediate_dim"],
        "head_dim": head_dim,
        # KerasHub 0.32's decoder block always scales by head_dim ** -0.5,
        # whatever `query_head_dim_normalize` says; we compute what it computes.
        "query_pre_attn_scalar": head_dim,
        # KerasHub hard-codes Gemma 3's pattern and RoPE bases.
        "layer_types": [
            SLIDING if sliding and i % 6 < 5 else FULL for i in range(num_layers)
        ],
        "sliding_window": config.get("sliding_window_size", 512),
        "global_rope_wavelength": 1_000_000.0,
        "local_rope_wavelength": 10_000.0,
        "layer_norm_epsilon": config.get("layer_norm_epsilon", 1e-6),
    }


def backbone_weight_pairs(source, backbone):
    """`(KerasHub variable, our variable)` for every transformer weight.

    `source` is a KerasHub `Gemma3Backbone` (embedding model or decoder; its
    LM head is the tied embedding table and any vision encoder is left out),
    `backbone` an `EmbeddingGemmaBackbone` of the same dimensions.
    """
    pairs = [
        (source.token_embedding.embeddings, backbone.token_embedding.embeddings),
        (source.layer_norm.scale, backbone.final_norm.scale),
    ]
    for theirs, ours in zip(source.transformer_layers, backbone.transformer_layers):
        a, b = theirs.attention, ours.attention
        pairs += [
            (theirs.pre_attention_norm.scale, ours.pre_attention_norm.scale),
            (theirs.post_attention_norm.scale, ours.post_attention_norm.scale),
            (theirs.pre_ffw_norm.scale, ours.pre_ffw_norm.scale),
            (theirs.post_ffw_norm.scale, ours.post_ffw_norm.scale),
            (theirs.gating_ffw.kernel, ours.ffw_gating.kernel),
            (theirs.gating_ffw_2.kernel, ours.ffw_gating_2.kernel),
            (theirs.ffw_linear.kernel, ours.ffw_linear.kernel),
            (a.query_dense.kernel, b.query_dense.kernel),
            (a.key_dense.kernel, b.key_dense.kernel),
            (a.value_dense.kernel, b.value_dense.kernel),
            (a.output_dense.kernel, b.output_dense.kernel),
            (a.query_norm.scale, b.query_norm.scale),
            (a.key_norm.scale, b.key_norm.scale),
        ]
    return pairs


def embedding_weight_pairs(source, model):
    """`(KerasHub variable, our variable)` for every weight of an embedding
    `Gemma3Backbone` and an `EmbeddingGemma` with its two projection layers."""
    head = model.projection_head.dense_layers
    return backbone_weight_pairs(source, model.backbone) + [
        (source.get_layer("pooling_dense_1").kernel, head[0].kernel),
        (source.get_layer("embedding_projection").kernel, head[1].kernel),
    ]


def _copy_weights(source, model):
    """Gives `model` the weights of `source`: an unassigned variable of the
    same shape and dtype takes the backend's buffer itself (no copy), others
    get a copy."""
    for theirs, ours in embedding_weight_pairs(source, model):
        if (
            not _keras_compat.variable_has_value(ours)
            and tuple(theirs.shape) == tuple(ours.shape)
            and theirs.dtype == ours.dtype
        ):
            _keras_compat.give_variable_value(ours, theirs.value)
        else:
            assign_weight(ours, theirs.numpy(), f"{theirs.path!r} of the KerasHub preset")


def _read_keras_hub_backbone(directory):
    """KerasHub's float32 `Gemma3Backbone` of the preset, built without
    initial values and loaded with each variable adopting what it reads."""
    import keras_hub

    try:
        with deferred_variables():
            source = keras_hub.models.Gemma3Backbone.from_preset(
                directory, dtype="float32", load_weights=False
            )
        with filling_deferred_variables(), zero_copy_weight_files():
            source.load_weights(os.path.join(directory, "model.weights.h5"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"Could not read the KerasHub preset {directory}: {e}") from None
    return source


def load_keras_hub_preset(cls, directory, load_weights=True, dtype=None, **kwargs):
    """Builds an `EmbeddingGemma` of class `cls` from a KerasHub preset folder."""
    config = read_json(directory, "config.json")
    _check(
        config.get("registered_name") == KERAS_HUB_CLASS,
        f"registered_name is {config.get('registered_name')!r}, expected "
        f"{KERAS_HUB_CLASS!r}.",
    )
    backbone_config = config["config"]
    vocabulary = os.path.join(directory, VOCABULARY_PATH)
    if not os.path.isfile(vocabulary):
        raise CheckpointError(f"{VOCABULARY_PATH} is missing from {directory}.")
    with open(vocabulary, "rb") as f:
        tokenizer = EmbeddingGemmaTokenizer(proto=f.read())
    check_vocabulary_fits(
        tokenizer.vocabulary_size(), backbone_config["vocabulary_size"],
        f"{directory}: {VOCABULARY_PATH}", "config.json vocabulary_size",
    )
    if load_weights and not os.path.isfile(os.path.join(directory, "model.weights.h5")):
        raise CheckpointError(f"model.weights.h5 is missing from {directory}.")
    # With weights to read, variables get no random initial values first.
    build_scope = deferred_variables() if load_weights else contextlib.nullcontext([])
    # Compiled once loaded: the optimizer's variables need values now.
    compile_model = kwargs.pop("compile", True)
    with build_scope as pending:
        backbone = EmbeddingGemmaBackbone(
            **backbone_kwargs_from_keras_hub(backbone_config), dtype=dtype
        )
        model = cls(
            backbone=backbone,
            preprocessor=EmbeddingGemmaPreprocessor(tokenizer),
            pooling="mean",
            projection_units=(
                backbone_config["pooling_intermediate_dim"],
                backbone_config["embedding_dim"],
            ),
            compile=False,
            **kwargs,
        )
    if load_weights:
        with filling_deferred_variables():
            _copy_weights(_read_keras_hub_backbone(directory), model)
        missing = unassigned(pending)
        if missing:
            raise CheckpointError(
                f"The KerasHub preset {directory} holds no value for {', '.join(missing)}."
            )
    if compile_model:
        model.compile()
    return model
