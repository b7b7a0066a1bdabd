"""Initialising EmbeddingGemma from generative Gemma 3 checkpoints.

The two initialisations of the paper's Table 2, before any embedding
training:

- `EmbeddingGemma.from_decoder`: a decoder-only Gemma 3 (a Hugging Face
  `Gemma3ForCausalLM` / `Gemma3TextModel` / multimodal `gemma3` folder, or a
  KerasHub `Gemma3Backbone` preset), its attention made bidirectional.
- `EmbeddingGemma.from_t5gemma`: the text encoder of a Hugging Face
  T5Gemma 2 encoder-decoder (the paper's recipe: Gemma 3 adapted to an
  encoder-decoder, then its encoder kept).

The transformer weights are copied exactly; the pooler and projection head
are new (random, reproducible with `seed=`); the tokenizer comes from the
checkpoint and the prompts are the model card's.

Sliding windows. A serialised EmbeddingGemma window `w` means "`w // 2`
tokens on each side" (512 -> +-256). The sources mean other things by theirs:

- A decoder's causal window `w` (Gemma 3 270M / 1B: 512, 4B and up: 1024)
  lets a token see itself and the `w - 1` tokens before it. By default the
  number is kept, so a token sees `w // 2` tokens on each side: about as many
  tokens as the decoder saw, all at distances it was trained on. This is
  what transformers computes when `use_bidirectional_attention=True` is set
  on the same config, and what the published model did (512 from a 512
  decoder). `sliding_window=2 * (w - 1)` keeps the decoder's full reach on
  both sides instead.
- T5Gemma 2's bidirectional encoder window `w` covers exactly `w` tokens:
  `(w + 1) // 2 - 1` before and `w // 2` after. By default the number is
  kept: identical for an odd `w`; for an even `w` the embedding model sees
  one more token behind, so the outputs agree on inputs of up to `w // 2`
  tokens and differ beyond -- a starting point that the embedding training
  adapts, not an exact copy.

RoPE scaling. Gemma 3 checkpoints that stretch RoPE for long contexts (a
linear factor of 8 on the global layers of the 4B and larger models) cannot
be represented: `EmbeddingGemmaBackbone` has plain RoPE, and dropping the
scaling would silently change every position's encoding, so they are
refused with an error naming it.
"""

import contextlib
import math
import os
import random

import keras_hub
import numpy as np
from keras import ops

from keras_egemma.convert.assign import assign_weight
from keras_egemma.convert.huggingface import backbone_kwargs_from_config
from keras_egemma.convert.huggingface import load_backbone_weights
from keras_egemma.convert.huggingface import open_safetensors
from keras_egemma.convert.huggingface import read_json
from keras_egemma.convert.huggingface import read_tokenizer_proto
from keras_egemma.convert.keras_hub_preset import KERAS_HUB_CLASS
from keras_egemma.convert.keras_hub_preset import VOCABULARY_PATH
from keras_egemma.convert.keras_hub_preset import backbone_kwargs_from_keras_hub
from keras_egemma.convert.keras_hub_preset import backbone_weight_pairs
from keras_egemma.io.errors import CheckpointError
from keras_egemma.io.preset_loading import resolve_directory
from keras_egemma.layers.poolers import POOLERS
from keras_egemma.models.backbone import EmbeddingGemmaBackbone
from keras_egemma.models.dtypes import check_dtype
from keras_egemma.models.preprocessor import EmbeddingGemmaPreprocessor
from keras_egemma.models.tokenizer import EmbeddingGemmaTokenizer

# Where the T5Gemma 2 text encoder's tensors live: the hub layout of
# `T5Gemma2ForConditionalGeneration` / `T5Gemma2Model` first, then the names
# transformers uses in memory, then a bare `T5Gemma2Encoder`.
_T5GEMMA2_ENCODER_PREFIXES = (
    "model.encoder.",
    "encoder.",
    "model.encoder.text_model.",
    "encoder.text_model.",
    "text_model.",
    "",
)
# Gemma 3 block-norm names -> T5Gemma 2 encoder names (the rest are equal).
_T5GEMMA2_RENAMES = (
    (".input_layernorm.", ".pre_self_attn_layernorm."),
    (".post_attention_layernorm.", ".post_self_attn_layernorm."),
)


def embedding_gemma_from_decoder(
    model_class,
    source,
    *,
    projection_units=(3072, 768),
    pooling="mean",
    sequence_length=2048,
    sliding_window=None,
    dtype=None,
    seed=None,
):
    """An `EmbeddingGemma` initialised from a decoder-only Gemma 3 checkpoint.

    The decoder's transformer weights are copied exactly and its attention
    becomes bidirectional (`EmbeddingGemmaBackbone` always is); its LM head
    (the tied embedding table) and any vision encoder are left out. The
    pooler and projection head are new, randomly initialised. The tokenizer
    is the checkpoint's; the prompts are the model card's.

    Args:
        model_class: the class to build, `EmbeddingGemma` or a subclass
            (`EmbeddingGemma.from_decoder` passes its own).
        source: a folder (or `hf://` / `kaggle://` handle) holding either a
            Hugging Face checkpoint (`config.json` with model_type
            `"gemma3_text"` -- `Gemma3ForCausalLM` or `Gemma3TextModel` --
            or a multimodal `"gemma3"` config whose `text_config` lists every
            field; safetensors weights, sharded or not; `tokenizer.model` or
            `tokenizer.json`) or a KerasHub `Gemma3Backbone` preset.
        projection_units: widths of the new bias-free projection layers
            after pooling (`(3072, 768)` as published; `()` for none).
        pooling: `"mean"` (published), `"first"`, `"last"` or `"attention"`.
        sequence_length: longest packed input of the preprocessor.
        sliding_window: the sliding layers' window in EmbeddingGemma's
            convention (a token sees `sliding_window // 2` tokens on each
            side). Defaults to the decoder's causal window number; see the
            module docstring for the mapping.
        dtype: `"float32"` (default) or `"bfloat16"`.
        seed: int. Seeds the new pooler / projection weights, so the same
            seed gives the same model. `None` draws them at random.

    Returns:
        An `EmbeddingGemma` whose backbone has `num_layers`, widths and RoPE
        bases of the decoder, and whose embeddings are `(n,
        projection_units[-1])`.

    Raises:
        CheckpointError: the folder is not a Gemma 3 decoder, or the
            decoder uses something the backbone cannot represent (RoPE
            scaling, attention soft-capping, another activation).

    Example:
    ```python
    model = embedding_gemma_from_decoder(EmbeddingGemma, "gemma-3-270m/", seed=0)
    model.compile()
    model.fit(pairs, batch_size=32)   # then train as in the paper
    q = model.encode_query(["Which planet is known as the Red Planet?"])
    ```
    """
    _check_arguments(pooling, sliding_window, dtype)
    directory = resolve_directory(source)
    config = read_json(directory, "config.json")
    if config.get("registered_name") == KERAS_HUB_CLASS:
        parts = _keras_hub_decoder(directory, config["config"])
    elif "model_type" in config:
        parts = _huggingface_decoder(directory, config)
    else:
        raise CheckpointError(
            f"{directory}/config.json is neither a Hugging Face config nor a "
            f"KerasHub Gemma3Backbone preset (registered_name="
            f"{config.get('registered_name')!r})."
        )
    return _assemble(
        model_class,
        *parts,
        projection_units=projection_units,
        pooling=pooling,
        sequence_length=sequence_length,
        sliding_window=sliding_window,
        dtype=dtype,
        seed=seed,
    )


def embedding_gemma_from_t5gemma(
    model_class,
    source,
    *,
    projection_units=(3072, 768),
    pooling="mean",
    sequence_length=2048,
    sliding_window=None,
    dtype=None,
    seed=None,
):
    """An `EmbeddingGemma` initialised from the encoder of a T5Gemma 2 model.

    T5Gemma 2 (transformers' `T5Gemma2ForConditionalGeneration` /
    `T5Gemma2Model`, model_type `"t5gemma2"`, or a saved `T5Gemma2Encoder`,
    `"t5gemma2_encoder"`) adapts Gemma 3 into an encoder-decoder; its text
    encoder is a bidirectional Gemma 3 stack, exactly what
    `EmbeddingGemmaBackbone` computes. Its weights are copied; the decoder,
    the vision tower and the LM head are left out. The end-of-image token's
    separate embedding (used unscaled in place of its table row) is folded
    into the table as `eoi_embedding / sqrt(hidden_dim)`, so that token too
    embeds as in the source. The pooler and projection head are new,
    randomly initialised.

    The original T5Gemma (model_type `"t5gemma"`) is refused: its encoder is
    a Gemma 2 network -- no query/key RMSNorm, attention logits soft-capped
    (50 by default) -- which the Gemma 3 backbone cannot represent.

    Args:
        model_class: the class to build (`EmbeddingGemma.from_t5gemma`
            passes its own).
        source: a folder (or `hf://` handle) with `config.json`, safetensors
            weights (sharded or not) and `tokenizer.model` or
            `tokenizer.json`.
        projection_units, pooling, sequence_length, dtype, seed: as in
            `EmbeddingGemma.from_decoder`.
        sliding_window: the sliding layers' window in EmbeddingGemma's
            convention. Defaults to the encoder's number; see the module
            docstring for the mapping.

    Returns:
        An `EmbeddingGemma` (embeddings `(n, projection_units[-1])`).

    Raises:
        CheckpointError: not a T5Gemma 2 checkpoint, a T5Gemma (Gemma 2)
            one, or an encoder with RoPE scaling or attention soft-capping.

    Example:
    ```python
    model = embedding_gemma_from_t5gemma(EmbeddingGemma, "t5gemma-2-270m-270m/", seed=0)
    model.encode_document(["Mars is the red planet."]).shape   # (1, 768)
    ```
    """
    _check_arguments(pooling, sliding_window, dtype)
    directory = resolve_directory(source)
    config = read_json(directory, "config.json")
    model_type = config.get("model_type")
    if model_type == "t5gemma":
        raise CheckpointError(_t5gemma_v1_message(directory, config))
    if model_type == "t5gemma2":
        encoder = config.get("encoder") or {}
        eoi_token_index = config.get(
            "eoi_token_index", encoder.get("eoi_token_index", 256_000)
        )
    elif model_type == "t5gemma2_encoder":
        encoder, eoi_token_index = config, config.get("eoi_token_index", 256_000)
    else:
        raise CheckpointError(
            f"{directory}/config.json has model_type {model_type!r}; expected "
            "'t5gemma2' (a T5Gemma 2 encoder-decoder) or 't5gemma2_encoder'. "
            "For a decoder-only Gemma 3 use `EmbeddingGemma.from_decoder`."
        )
    text_config = encoder.get("text_config")
    where = f"{directory}/config.json (encoder text_config)"
    if not isinstance(text_config, dict):
        raise CheckpointError(f"{where}: the encoder has no text_config.")
    # The text encoder's config is a Gemma 3 text config.
    backbone_kwargs = _bidirectional_backbone_kwargs(text_config, where)
    weights = open_safetensors(directory)
    prefix = next(
        (p for p in _T5GEMMA2_ENCODER_PREFIXES if p + "embed_tokens.weight" in weights),
        None,
    )
    if prefix is None:
        raise CheckpointError(
            f"{weights.path} holds no T5Gemma 2 text encoder: none of "
            f"{[p + 'embed_tokens.weight' for p in _T5GEMMA2_ENCODER_PREFIXES]} "
            "is in it."
        )

    def load(backbone):
        encoder_weights = _T5Gemma2EncoderTensors(weights, prefix, eoi_token_index, backbone)
        load_backbone_weights(backbone, encoder_weights)

    return _assemble(
        model_class,
        backbone_kwargs,
        load,
        read_tokenizer_proto(directory),
        projection_units=projection_units,
        pooling=pooling,
        sequence_length=sequence_length,
        sliding_window=sliding_window,
        dtype=dtype,
        seed=seed,
    )


# --- Sources ---------------------------------------------------------------


def _huggingface_decoder(directory, config):
    """(backbone kwargs, weight loader, tokenizer proto) of a HF decoder."""
    model_type = config.get("model_type")
    where = f"{directory}/config.json"
    if model_type == "gemma3":
        # Multimodal Gemma 3: the language model's config is nested and its
        # tensors are prefixed `model.language_model.` (read by the loader).
        config = config.get("text_config")
        where += " (text_config)"
        if not isinstance(config, dict):
            raise CheckpointError(f"{where}: the multimodal config has no text_config.")
    elif model_type in ("t5gemma", "t5gemma2", "t5gemma2_encoder"):
        raise CheckpointError(
            f"{where} is a T5Gemma encoder-decoder; use "
            "`EmbeddingGemma.from_t5gemma` for it."
        )
    elif model_type != "gemma3_text":
        raise CheckpointError(
            f"{where} has model_type {model_type!r}; expected a Gemma 3 decoder "
            "('gemma3_text': Gemma3ForCausalLM / Gemma3TextModel, or the "
            "multimodal 'gemma3')."
        )
    backbone_kwargs = _bidirectional_backbone_kwargs(config, where)
    weights = open_safetensors(directory)
    return (
        backbone_kwargs,
        lambda backbone: load_backbone_weights(backbone, weights),
        read_tokenizer_proto(directory),
    )


def _keras_hub_decoder(directory, config):
    """(backbone kwargs, weight loader, tokenizer proto) of a KerasHub preset."""
    where = f"KerasHub preset {directory}/config.json"
    for key in ("local_rope_scaling_factor", "global_rope_scaling_factor"):
        factor = config.get(key, 1.0)
        if factor != 1.0:
            raise CheckpointError(_rope_message(where, f"{key}={factor}"))
    # A decoder preset is the embedding preset's transformer with causal
    # attention; its vision encoder (if any) is not used.
    backbone_kwargs = backbone_kwargs_from_keras_hub(
        {
            **config,
            "is_embedding_model": True,
            "use_bidirectional_attention": True,
            "vision_encoder": None,
        }
    )
    vocabulary = os.path.join(directory, VOCABULARY_PATH)
    if not os.path.isfile(vocabulary):
        raise CheckpointError(
            f"{VOCABULARY_PATH} is missing from {directory}: save the tokenizer with "
            "the preset (`tokenizer.save_to_preset(...)`)."
        )
    with open(vocabulary, "rb") as f:
        proto = f.read()

    def load(backbone):
        if not os.path.isfile(os.path.join(directory, "model.weights.h5")):
            raise CheckpointError(f"model.weights.h5 is missing from {directory}.")
        try:
            source = keras_hub.models.Gemma3Backbone.from_preset(
                directory, dtype="float32"
            )
        except (OSError, ValueError) as e:
            raise CheckpointError(f"Could not read the KerasHub preset {directory}: {e}") from None
        for theirs, ours in backbone_weight_pairs(source, backbone):
            assign_weight(ours, theirs.numpy(), f"{theirs.path!r} of the KerasHub preset")

    return backbone_kwargs, load, proto


def _assemble(
    model_class,
    backbone_kwargs,
    load_weights,
    proto,
    *,
    projection_units,
    pooling,
    sequence_length,
    sliding_window,
    dtype,
    seed,
):
    """Backbone with the source's weights + new head -> a `model_class`
    (`EmbeddingGemma` or a subclass)."""
    if sliding_window is not None:
        backbone_kwargs = {**backbone_kwargs, "sliding_window": sliding_window}
    tokenizer = EmbeddingGemmaTokenizer(proto=proto)
    if tokenizer.vocabulary_size() > backbone_kwargs["vocabulary_size"]:
        raise CheckpointError(
            f"The tokenizer has {tokenizer.vocabulary_size()} tokens but the "
            f"embedding table only {backbone_kwargs['vocabulary_size']} rows: "
            "tokenizer and weights come from different models."
        )
    backbone = EmbeddingGemmaBackbone(**backbone_kwargs, dtype=dtype)
    load_weights(backbone)
    preprocessor = EmbeddingGemmaPreprocessor(tokenizer, sequence_length=sequence_length)
    with _initializer_seed(seed):
        return model_class(
            backbone=backbone,
            preprocessor=preprocessor,
            pooling=pooling,
            projection_units=projection_units,
        )


# --- Helpers ---------------------------------------------------------------


def _check_arguments(pooling, sliding_window, dtype):
    """Fails on bad arguments before any weights are read."""
    check_dtype(dtype)
    if pooling not in POOLERS:
        raise ValueError(f"Unknown pooling {pooling!r}. Choose one of {sorted(POOLERS)}.")
    if sliding_window is not None and (
        not isinstance(sliding_window, int) or sliding_window < 1
    ):
        raise ValueError(
            f"`sliding_window` must be a positive int (a token sees "
            f"`sliding_window // 2` tokens on each side), got {sliding_window!r}."
        )


@contextlib.contextmanager
def _initializer_seed(seed):
    """Makes the unseeded Keras initializers created inside reproducible.

    A Keras initializer built without a seed (the `Dense` default, the
    attention pooler's) draws one from Python's `random` module when it is
    created. Seeding that module for the block and restoring its state after
    makes the new head depend on `seed` alone, without resetting the
    caller's global seeds as `keras.utils.set_random_seed` would.
    """
    if seed is None:
        yield
        return
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _rope_message(where, scaling):
    return (
        f"{where}: the checkpoint scales RoPE ({scaling}), which "
        "EmbeddingGemmaBackbone cannot represent: it uses plain RoPE, and "
        "dropping the scaling would silently change every position's encoding. "
        "Start from a checkpoint without RoPE scaling (e.g. Gemma 3 270M or 1B)."
    )


def _check_huggingface_rope(config, where):
    """Refuses RoPE scaling in either transformers 5.x or 4.x fields."""
    params = config.get("rope_parameters")
    if isinstance(params, dict):
        # One dict per layer type (Gemma 3), or one for every layer.
        per_type = [v for v in params.values() if isinstance(v, dict)] or [params]
        if any(p.get("rope_type", "default") != "default" for p in per_type):
            raise CheckpointError(_rope_message(where, f"rope_parameters {params}"))
    scaling = config.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise CheckpointError(_rope_message(where, f"rope_scaling {scaling}"))


def _bidirectional_backbone_kwargs(config, where):
    """Backbone arguments of a Gemma 3 text config, made an encoder.

    RoPE scaling is refused; the attention becomes bidirectional; the LM
    head, the only place the final soft-cap applies, is dropped.
    """
    _check_huggingface_rope(config, where)
    config = {
        **config,
        "model_type": "gemma3_text",
        "use_bidirectional_attention": True,
        "final_logit_softcapping": None,
    }
    try:
        return backbone_kwargs_from_config(config)
    except KeyError as e:
        raise CheckpointError(
            f"{where} lacks the field {e.args[0]!r}. (Multimodal configs may leave "
            "fields at transformers' defaults; write them into the config.)"
        ) from None


def _t5gemma_v1_message(directory, config):
    encoder = config.get("encoder") or {}
    softcap = encoder.get("attn_logit_softcapping", 50.0)
    return (
        f"{directory} is a T5Gemma (model_type 't5gemma') checkpoint. Its encoder "
        "is a Gemma 2 network: no query/key RMSNorm in attention"
        + (f", attention logits soft-capped at {softcap}" if softcap is not None else "")
        + ". EmbeddingGemmaBackbone is a Gemma 3 network (QK-norm, no "
        "soft-capping) and cannot represent it. Use a T5Gemma 2 checkpoint "
        "(model_type 't5gemma2', e.g. google/t5gemma-2-270m-270m), whose encoder "
        "is Gemma 3, or `EmbeddingGemma.from_decoder` with a Gemma 3 decoder."
    )


class _T5Gemma2EncoderTensors:
    """A T5Gemma 2 checkpoint's text-encoder tensors under Gemma 3 names.

    Lets `load_backbone_weights` read the encoder: `layers.N.input_layernorm`
    is `pre_self_attn_layernorm` there (`post_attention_layernorm`:
    `post_self_attn_layernorm`), everything sits under `prefix`, and the
    end-of-image token's separate embedding is folded into the table.
    """

    def __init__(self, weights, prefix, eoi_token_index, backbone):
        self._weights = weights
        self._prefix = prefix
        self.path = f"{weights.path} (T5Gemma 2 encoder tensors '{prefix}*')"
        eoi_name = prefix + "embed_tokens.eoi_embedding"
        # The source puts `eoi_embedding` as is in place of this token's
        # scaled row; dividing it by the scale the backbone applies (in its
        # compute dtype) reproduces that. An index outside the table never
        # occurs in the input.
        self._eoi = None
        if (
            eoi_name in weights
            and eoi_token_index is not None
            and 0 <= eoi_token_index < backbone.vocabulary_size
        ):
            scale = ops.cast(
                math.sqrt(backbone.hidden_dim), backbone.token_embedding.compute_dtype
            )
            scale = np.float32(ops.convert_to_numpy(scale))
            self._eoi = (eoi_token_index, np.asarray(weights.get(eoi_name), "float32") / scale)

    def _key(self, name):
        for ours, theirs in _T5GEMMA2_RENAMES:
            name = name.replace(ours, theirs)
        return self._prefix + name

    def __contains__(self, name):
        return self._key(name) in self._weights

    def shape(self, name):
        return self._weights.shape(self._key(name))

    def get(self, name, map_mode=None):
        value = self._weights.get(self._key(name), map_mode)
        if name == "embed_tokens.weight" and self._eoi is not None:
            index, row = self._eoi
            value = np.array(value, dtype="float32")
            value[index] = row
        return value
