"""`EmbeddingGemma` -> a sentence-transformers / Hugging Face folder.

The inverse of `keras_egemma.convert.huggingface`, in the layout of
`google/embeddinggemma-300m`: `config.json` (a `Gemma3TextModel`),
`model.safetensors` (sharded with an index above `max_shard_size`), the
tokenizer (`tokenizer.model`, `tokenizer.json`, `tokenizer_config.json`,
`special_tokens_map.json`), `modules.json` (Transformer -> Pooling -> Dense
... -> Normalize), `1_Pooling/`, one `{i}_Dense/` per projection layer,
`sentence_bert_config.json`, `config_sentence_transformers.json` (the prompts)
and a `README.md` model card. The JSON files use the published dialect
(transformers 4.57 / sentence-transformers 5.1), which newer releases read too.
"""

import json
import os

import keras
import ml_dtypes
import numpy as np

from keras_egemma.convert.huggingface import POOLING_MODES
from keras_egemma.convert.huggingface import backbone_weight_plan
from keras_egemma.convert.model_card import model_card
from keras_egemma.convert.safetensors_writing import array_entry
from keras_egemma.convert.safetensors_writing import write_safetensors_file
from keras_egemma.convert.safetensors_writing import write_sharded_safetensors
from keras_egemma.convert.tokenizer_json import tokenizer_json_from_spm_proto
from keras_egemma.io.atomic_saving import save_atomically
from keras_egemma.quantization.dequantization import dequantized_copy
from keras_egemma.version import __version__

ST_CONFIG = "config_sentence_transformers.json"
_IDENTITY = "torch.nn.modules.linear.Identity"
_POOLING_KEYS = {mode: key for key, mode in POOLING_MODES.items()}
_OTHER_POOLING_KEYS = (
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
)


def check_expressible(model):
    """Refuses a model that a sentence-transformers folder would compute
    differently, before anything is written."""
    if model.pooling not in _POOLING_KEYS:
        raise ValueError(
            f"This model pools with {model.pooling!r}, which sentence-transformers' Pooling "
            "module cannot express (its modes are mean, cls, lasttoken, max and weighted "
            "mean; none has learned weights), so the folder would give other embeddings. "
            "Train the model with pooling='mean', 'first' or 'last' to export it."
        )
    if getattr(model, "quantization", None) is not None:
        raise ValueError(
            f"This model is quantized ({model.quantization.get('mode')}); Gemma3TextModel and "
            "sentence-transformers' Dense hold float weights. Export the float model (before "
            "`quantize`), or pass dequantize=True to write the float weights its quantized "
            "layers compute with."
        )
    if model.preprocessor is None:
        raise ValueError("This model has no preprocessor, so there is no tokenizer to export.")


def is_replaceable_folder(directory):
    """True for an empty folder or one this writer wrote."""
    if not os.listdir(directory):
        return True
    try:
        with open(os.path.join(directory, ST_CONFIG), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and "keras_egemma" in (config.get("__version__") or {})


def _numpy(variable):
    """A variable's value in its own dtype (bfloat16 stays bfloat16)."""
    dtype = ml_dtypes.bfloat16 if variable.dtype == "bfloat16" else np.float32
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32).astype(dtype)


def _dtype_name(backbone):
    return "bfloat16" if backbone.token_embedding.embeddings.dtype == "bfloat16" else "float32"


def gemma3_text_config(model):
    """config.json of the `Gemma3TextModel`: the serialised window is even,
    `2 * (sliding_window // 2)`, which transformers reads back (as
    `w // 2 + 1`, exclusive) as our rule `|i - j| <= sliding_window // 2`."""
    backbone, tokenizer = model.backbone, model.preprocessor.tokenizer
    return {
        "architectures": ["Gemma3TextModel"],
        "model_type": "gemma3_text",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "bos_token_id": tokenizer.start_token_id,
        "eos_token_id": tokenizer.end_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "dtype": _dtype_name(backbone),
        "head_dim": backbone.head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": backbone.hidden_dim,
        "initializer_range": 0.02,
        "intermediate_size": backbone.intermediate_dim,
        "layer_types": list(backbone.layer_types),
        "max_position_embeddings": model.preprocessor.sequence_length,
        "num_attention_heads": backbone.num_query_heads,
        "num_hidden_layers": backbone.num_layers,
        "num_key_value_heads": backbone.num_key_value_heads,
        "query_pre_attn_scalar": backbone.query_pre_attn_scalar,
        "rms_norm_eps": backbone.layer_norm_epsilon,
        "rope_theta": backbone.global_rope_wavelength,
        "rope_local_base_freq": backbone.local_rope_wavelength,
        "rope_scaling": None,
        "sliding_window": 2 * (backbone.sliding_window // 2),
        "use_bidirectional_attention": True,
        "use_cache": False,
        "vocab_size": backbone.vocabulary_size,
    }


def _tokenizer_files(tokenizer, sequence_length):
    proto = tokenizer.proto
    vocabulary = set(tokenizer.get_vocabulary())
    special = {
        "bos_token": tokenizer.id_to_token(tokenizer.start_token_id),
        "eos_token": tokenizer.id_to_token(tokenizer.end_token_id),
        "pad_token": tokenizer.id_to_token(tokenizer.pad_token_id),
        "unk_token": tokenizer.id_to_token(tokenizer.unk_token_id),
        **({"mask_token": "<mask>"} if "<mask>" in vocabulary else {}),
    }
    config = {
        **special,
        "add_bos_token": True,
        "add_eos_token": True,
        "model_max_length": sequence_length,
        "padding_side": "right",
        "tokenizer_class": "GemmaTokenizer",
    }
    return proto, {
        "tokenizer.json": tokenizer_json_from_spm_proto(proto),
        "tokenizer_config.json": config,
        "special_tokens_map.json": special,
    }


def _write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _module(index, name, path):
    return {"idx": index, "name": str(index), "path": path,
            "type": f"sentence_transformers.models.{name}"}


def write_sentence_transformers_folder(model, folder, max_shard_bytes, card):
    """Writes every file into the existing, empty `folder`; `card` is the
    README text."""
    backbone, preprocessor = model.backbone, model.preprocessor
    entries = [
        (name, shape, variable.dtype, lambda v=variable, f=to_hf: f(_numpy(v)))
        for name, shape, variable, _, to_hf in backbone_weight_plan(backbone)
    ]
    write_sharded_safetensors(folder, entries, max_shard_bytes)
    _write_json(os.path.join(folder, "config.json"), gemma3_text_config(model))

    proto, tokenizer_files = _tokenizer_files(preprocessor.tokenizer, preprocessor.sequence_length)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(proto)
    for name, value in tokenizer_files.items():
        _write_json(os.path.join(folder, name), value)

    modules = [_module(0, "Transformer", ""), _module(1, "Pooling", "1_Pooling")]
    os.mkdir(os.path.join(folder, "1_Pooling"))
    pooling = {key: key == _POOLING_KEYS[model.pooling] for key in POOLING_MODES}
    pooling.update(dict.fromkeys(_OTHER_POOLING_KEYS, False))
    _write_json(
        os.path.join(folder, "1_Pooling", "config.json"),
        {"word_embedding_dimension": backbone.hidden_dim, **pooling, "include_prompt": True},
    )
    for layer in model.projection_head.dense_layers:
        index = len(modules)
        path = f"{index}_Dense"
        os.mkdir(os.path.join(folder, path))
        kernel = _numpy(layer.kernel)
        _write_json(
            os.path.join(folder, path, "config.json"),
            {"in_features": kernel.shape[0], "out_features": kernel.shape[1], "bias": False,
             "activation_function": _IDENTITY},
        )
        write_safetensors_file(
            os.path.join(folder, path, "model.safetensors"),
            [array_entry("linear.weight", np.ascontiguousarray(kernel.T))],
        )
        modules.append(_module(index, "Dense", path))
    if model.projection_head.normalize:
        # The hub drops empty folders; sentence-transformers needs none here.
        modules.append(_module(len(modules), "Normalize", f"{len(modules)}_Normalize"))
    _write_json(os.path.join(folder, "modules.json"), modules)
    _write_json(
        os.path.join(folder, "sentence_bert_config.json"),
        {"max_seq_length": preprocessor.sequence_length, "do_lower_case": False},
    )
    _write_json(
        os.path.join(folder, ST_CONFIG),
        {
            "__version__": {"keras_egemma": __version__},
            "model_type": "SentenceTransformer",
            "prompts": dict(preprocessor.prompts),
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(card)


def save_sentence_transformers_folder(model, path, max_shard_size=5, dequantize=False, **card):
    """Saves `model` as a sentence-transformers folder at `path`, atomically.

    Args:
        model: an `EmbeddingGemma` with mean, first-token or last-token pooling
            and float weights.
        path: the folder; an existing one is replaced only if it is empty or
            was written here.
        max_shard_size: largest `model.safetensors` in GB before sharding.
        dequantize: write a quantized model's weights as the floats its layers
            compute with (`keras_egemma.quantization.dequantization`) instead of
            refusing it.
        **card: `keras_egemma.convert.model_card.model_card` arguments.

    Example:
    ```python
    save_sentence_transformers_folder(model, "./my-embeddinggemma")
    SentenceTransformer("./my-embeddinggemma").encode_query(["a query"])
    ```
    """
    source = dequantized_copy(model) if dequantize else model
    check_expressible(source)
    # The card describes the model as trained (its history, its objective).
    text = model_card(model, **card)
    max_shard_bytes = int(max_shard_size * 1e9)

    def save(folder):
        write_sentence_transformers_folder(source, folder, max_shard_bytes, text)

    save_atomically(
        save, path, replaceable=is_replaceable_folder,
        kind="a sentence-transformers folder written by keras_egemma",
    )
