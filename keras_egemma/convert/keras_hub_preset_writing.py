"""`EmbeddingGemma` -> a KerasHub `Gemma3Backbone(is_embedding_model=True)` preset.

The inverse of `keras_egemma.convert.keras_hub_preset`, in the layout of the
Kaggle preset `keras/embeddinggemma/keras/embedding_gemma3_300m`: the backbone
(`config.json`, `model.weights.h5`, `metadata.json`) and its `Gemma3Tokenizer`
(`tokenizer.json`, `assets/tokenizer/vocabulary.spm`), written by KerasHub
itself so that `keras_hub.models.Gemma3Backbone.from_preset` reads it.

KerasHub fixes what our backbone leaves free (the layer pattern, the RoPE
bases, scores scaled by `head_dim ** -0.5`, mean pooling and a two-layer
head); a model outside that is refused. Prompts and the sequence length have
no place in the preset. KerasHub 0.32's sliding window sees one token fewer on
one side than the reference, so its embeddings equal ours only on texts of at
most `sliding_window // 2` tokens.
"""

import json
import os

import keras
import keras_hub

from keras_egemma.convert.keras_hub_preset import KERAS_HUB_CLASS
from keras_egemma.convert.keras_hub_preset import embedding_weight_pairs
from keras_egemma.io.atomic_saving import read_json_object
from keras_egemma.io.atomic_saving import save_atomically
from keras_egemma.models.backbone import FULL
from keras_egemma.models.backbone import SLIDING
from keras_egemma.quantization.dequantization import dequantized_copy
from keras_egemma.version import __version__

# Added to KerasHub's metadata.json: marks a preset this writer may replace.
EXPORTED_BY = "exported_by"
_KERAS_HUB_ROPE = (1_000_000.0, 10_000.0)
_VISION_TOKENS = ("<img>", "<start_of_image>", "<end_of_image>")


def _refuse(reason):
    raise ValueError(f"A KerasHub Gemma3Backbone preset cannot express this model: {reason}")


def check_expressible(model):
    """Refuses, before anything is written, a model KerasHub would compute
    differently."""
    backbone = model.backbone
    if getattr(model, "quantization", None) is not None:
        _refuse(f"it is quantized ({model.quantization.get('mode')}); export the float model, "
                "or pass dequantize=True.")
    if model.pooling != "mean":
        _refuse(f"it pools with {model.pooling!r}; KerasHub's embedding model mean-pools.")
    if len(model.projection_head.units) != 2 or not model.projection_head.normalize:
        _refuse(
            f"its head is {list(model.projection_head.units)} (normalised: "
            f"{model.projection_head.normalize}); KerasHub has two dense layers, then L2."
        )
    layers = list(backbone.layer_types)
    pattern = [SLIDING if i % 6 < 5 else FULL for i in range(backbone.num_layers)]
    if layers not in (pattern, [FULL] * backbone.num_layers):
        _refuse(
            "its layer types are not Gemma 3's five sliding then one full layer (or all "
            "full), the only patterns KerasHub builds."
        )
    if backbone.query_pre_attn_scalar != backbone.head_dim:
        _refuse(
            f"query_pre_attn_scalar is {backbone.query_pre_attn_scalar}; KerasHub 0.32 scales "
            f"attention scores by head_dim ** -0.5 ({backbone.head_dim})."
        )
    rope = (backbone.global_rope_wavelength, backbone.local_rope_wavelength)
    if rope != _KERAS_HUB_ROPE:
        _refuse(f"its RoPE bases are {rope}; KerasHub uses {_KERAS_HUB_ROPE}.")
    if model.preprocessor is None:
        _refuse("it has no preprocessor, so there is no tokenizer to export.")


def keras_hub_backbone(model):
    """A `Gemma3Backbone(is_embedding_model=True)` holding `model`'s weights."""
    backbone = model.backbone
    units = model.projection_head.units
    source = keras_hub.models.Gemma3Backbone(
        vocabulary_size=backbone.vocabulary_size,
        image_size=None,
        num_layers=backbone.num_layers,
        num_query_heads=backbone.num_query_heads,
        num_key_value_heads=backbone.num_key_value_heads,
        hidden_dim=backbone.hidden_dim,
        intermediate_dim=backbone.intermediate_dim,
        head_dim=backbone.head_dim,
        query_head_dim_normalize=True,
        use_query_key_norm=True,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        attention_logit_soft_cap=None,
        final_logit_soft_cap=None,
        use_sliding_window_attention=SLIDING in backbone.layer_types,
        sliding_window_size=backbone.sliding_window,
        local_rope_scaling_factor=1.0,
        global_rope_scaling_factor=1.0,
        vision_encoder=None,
        layer_norm_epsilon=backbone.layer_norm_epsilon,
        use_bidirectional_attention=True,
        dropout=0,
        is_embedding_model=True,
        pooling_intermediate_dim=units[0],
        embedding_dim=units[1],
        dtype=backbone.token_embedding.embeddings.dtype,
        # The name KerasHub's conversion gives it (a fresh one would be numbered).
        name="gemma3_backbone",
    )
    for theirs, ours in embedding_weight_pairs(source, model):
        theirs.assign(keras.ops.convert_to_numpy(ours))
    return source


def is_replaceable_preset(directory):
    """True for an empty folder or a preset this writer wrote."""
    if not os.listdir(directory):
        return True
    metadata = read_json_object(os.path.join(directory, "metadata.json")) or {}
    config = read_json_object(os.path.join(directory, "config.json")) or {}
    return (
        str(metadata.get(EXPORTED_BY, "")).startswith("keras_egemma")
        and config.get("registered_name") == KERAS_HUB_CLASS
    )


def save_keras_hub_preset(model, path, max_shard_size=10, dequantize=False):
    """Saves `model` as a KerasHub embedding `Gemma3Backbone` preset, atomically.

    Args:
        model: an `EmbeddingGemma` that KerasHub can express (see the module
            docstring).
        path: the folder; an existing one is replaced only if it is empty or
            was written here.
        max_shard_size: largest weights file in GB before KerasHub shards.
        dequantize: write a quantized model's weights as the floats its layers
            compute with instead of refusing it.

    Example:
    ```python
    save_keras_hub_preset(model, "./embeddinggemma_keras_hub")
    keras_hub.models.Gemma3Backbone.from_preset("./embeddinggemma_keras_hub")
    ```
    """
    model = dequantized_copy(model) if dequantize else model
    check_expressible(model)
    tokenizer = model.preprocessor.tokenizer
    # KerasHub's tokenizer checks for Gemma 3's image tokens unless told there are none.
    vision = set(_VISION_TOKENS) <= set(tokenizer.get_vocabulary())

    def save(folder):
        keras_hub_backbone(model).save_to_preset(folder, max_shard_size=max_shard_size)
        keras_hub.models.Gemma3Tokenizer(
            proto=tokenizer.proto, has_vision_tokens=vision
        ).save_to_preset(folder)
        metadata_path = os.path.join(folder, "metadata.json")
        with open(metadata_path, encoding="utf-8") as f:
            metadata = json.load(f)
        metadata[EXPORTED_BY] = f"keras_egemma {__version__}"
        with open(metadata_path, "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=4)

    save_atomically(
        save, path, replaceable=is_replaceable_preset,
        kind="a KerasHub preset written by keras_egemma",
    )
