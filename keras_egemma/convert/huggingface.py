"""Hugging Face / sentence-transformers checkpoint folder -> `EmbeddingGemma`.

The layout of `google/embeddinggemma-300m`: `config.json` (a `gemma3_text`
config) and `model.safetensors` at the top (the `Gemma3TextModel`), the
tokenizer (`tokenizer.model`), `modules.json` listing Transformer -> Pooling
-> Dense -> Dense -> Normalize, `1_Pooling/config.json`, `2_Dense/` and
`3_Dense/` (each a `config.json` and a `model.safetensors` holding
`linear.weight` of shape `[out, in]`), `config_sentence_transformers.json`
(the prompts) and `sentence_bert_config.json` (`max_seq_length`). Any of the
`model.safetensors` files may instead be sharded
(`model.safetensors.index.json` + `model-0000i-of-0000n.safetensors`).
"""

import contextlib
import json
import os

from keras_egemma.convert.assign import assign_weight
from keras_egemma.convert.safetensors_file import SHARD_INDEX_SUFFIX
from keras_egemma.convert.safetensors_file import SafetensorsFile
from keras_egemma.convert.safetensors_file import ShardedSafetensors
from keras_egemma.convert.tokenizer_json import spm_proto_from_tokenizer_json
from keras_egemma.io.deferred_variables import deferred_variables
from keras_egemma.io.deferred_variables import filling_deferred_variables
from keras_egemma.io.deferred_variables import unassigned
from keras_egemma.io.errors import CheckpointError
from keras_egemma.io.errors import check_vocabulary_fits
from keras_egemma.io.mapped_weights import file_map_mode
from keras_egemma.models.backbone import FULL
from keras_egemma.models.backbone import SLIDING
from keras_egemma.models.backbone import EmbeddingGemmaBackbone
from keras_egemma.models.backbone import default_layer_types
from keras_egemma.models.preprocessor import EmbeddingGemmaPreprocessor
from keras_egemma.models.prompts import DEFAULT_PROMPTS
from keras_egemma.models.tokenizer import EmbeddingGemmaTokenizer

POOLING_MODES = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "first",
    "pooling_mode_lasttoken": "last",
}
_WEIGHT_PREFIXES = ("model.language_model.", "language_model.model.", "model.")
# Weights formats that are Python pickles: unpickling can run arbitrary code.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def open_safetensors(directory, name="model.safetensors"):
    """`directory/name`, or its shards, as a `SafetensorsFile`-like reader.

    `name` is read when it exists; otherwise `name.index.json` and the
    shards it lists (what `save_pretrained` writes for a large model).
    Pickled weights are refused, never loaded.
    """
    path = os.path.join(directory, name)
    if os.path.isfile(path):
        return SafetensorsFile(path)
    index_path = path + SHARD_INDEX_SUFFIX
    if os.path.isfile(index_path):
        return ShardedSafetensors(index_path)
    if os.path.isdir(directory):
        pickled = sorted(f for f in os.listdir(directory) if f.endswith(_PICKLE_SUFFIXES))
        if pickled:
            raise CheckpointError(
                f"{path} is missing; {directory} has only pickled weights "
                f"({', '.join(pickled)}), which are never loaded because unpickling "
                "can run arbitrary code. Download the checkpoint's safetensors files, "
                "or, where you trust the pickle, convert its state dict with "
                f"safetensors.torch.save_file(state_dict, {name!r})."
            )
    raise CheckpointError(
        f"Weights file not found: {path} (nor a sharded {name}{SHARD_INDEX_SUFFIX} "
        "with its shards). Download the checkpoint's safetensors files."
    )


def read_json(directory, name, required=True):
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        if required:
            raise CheckpointError(f"{name} is missing from {directory}.")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}).") from None


def _rope_bases(config):
    """(global, local) RoPE bases from either transformers 4.x or 5.x fields."""
    params = config.get("rope_parameters")
    if isinstance(params, dict) and FULL in params:
        for layer_type in (FULL, SLIDING):
            rope_type = params.get(layer_type, {}).get("rope_type", "default")
            if rope_type != "default":
                raise CheckpointError(
                    f"config.json: RoPE type {rope_type!r} on {layer_type} layers "
                    "is not supported; EmbeddingGemma uses plain RoPE."
                )
        return params[FULL]["rope_theta"], params[SLIDING]["rope_theta"]
    scaling = config.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) != "default":
        raise CheckpointError(
            f"config.json: rope_scaling {scaling} is not supported; "
            "EmbeddingGemma uses plain RoPE."
        )
    return config.get("rope_theta", 1e6), config.get("rope_local_base_freq", 1e4)


def backbone_kwargs_from_config(config):
    """`EmbeddingGemmaBackbone` arguments from a `gemma3_text` config.json."""
    if config.get("model_type") != "gemma3_text":
        raise CheckpointError(
            f"config.json has model_type {config.get('model_type')!r}; expected "
            "'gemma3_text' (an EmbeddingGemma / Gemma 3 text checkpoint)."
        )
    if not config.get("use_bidirectional_attention", False):
        raise CheckpointError(
            "config.json: use_bidirectional_attention is not true, so this is a "
            "decoder (causal) Gemma 3 checkpoint, not an embedding model."
        )
    for field in ("attn_logit_softcapping", "final_logit_softcapping"):
        if config.get(field) is not None:
            raise CheckpointError(f"config.json: {field} must be null for EmbeddingGemma.")
    activation = config.get("hidden_activation", "gelu_pytorch_tanh")
    if activation not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise CheckpointError(
            f"config.json: hidden_activation {activation!r} is not supported "
            "(EmbeddingGemma uses gelu_pytorch_tanh)."
        )
    num_layers = config["num_hidden_layers"]
    global_base, local_base = _rope_bases(config)
    return {
        "vocabulary_size": config["vocab_size"],
        "num_layers": num_layers,
        "num_query_heads": config["num_attention_heads"],
        "num_key_value_heads": config["num_key_value_heads"],
        "hidden_dim": config["hidden_size"],
        "intermediate_dim": config["intermediate_size"],
        "head_dim": config["head_dim"],
        "query_pre_attn_scalar": config.get("query_pre_attn_scalar", config["head_dim"]),
        "layer_types": config.get("layer_types") or default_layer_types(num_layers),
        "sliding_window": config["sliding_window"],
        "global_rope_wavelength": float(global_base),
        "local_rope_wavelength": float(local_base),
        "layer_norm_epsilon": config.get("rms_norm_eps", 1e-6),
    }


def _read_modules(directory):
    """Pooling name, dense layer folders and normalisation from modules.json."""
    modules = read_json(directory, "modules.json", required=False)
    if modules is None:
        raise CheckpointError(
            f"modules.json is missing from {directory}: this is a bare "
            "transformers checkpoint. EmbeddingGemma needs the "
            "sentence-transformers layout (Pooling, 2_Dense, 3_Dense, Normalize)."
        )
    pooling, dense_dirs, normalize = None, [], False
    for module in sorted(modules, key=lambda m: m["idx"]):
        kind = module["type"].rsplit(".", 1)[-1]
        path = os.path.join(directory, module.get("path", ""))
        if kind == "Transformer":
            continue
        if kind == "Pooling":
            pooling = _pooling_from_config(read_json(path, "config.json"))
        elif kind == "Dense":
            dense_dirs.append(path)
        elif kind == "Normalize":
            normalize = True
        else:
            raise CheckpointError(f"modules.json: unsupported module {module['type']}.")
    if pooling is None:
        raise CheckpointError("modules.json has no Pooling module.")
    if not normalize:
        raise CheckpointError("modules.json has no Normalize module.")
    return pooling, dense_dirs


def _pooling_from_config(config):
    if not config.get("include_prompt", True):
        raise CheckpointError(
            "1_Pooling/config.json: include_prompt=false is not supported; "
            "EmbeddingGemma pools over the prompt tokens too."
        )
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        mode = {"mean": "mean", "cls": "first", "lasttoken": "last"}.get(mode)
        chosen = [mode] if mode else []
    else:
        chosen = [name for key, name in POOLING_MODES.items() if config.get(key)]
        others = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
        if len(others) != len(chosen):
            chosen = []
    if len(chosen) != 1:
        raise CheckpointError(
            f"1_Pooling/config.json: unsupported pooling {config}. Supported: "
            "mean, cls (first token), lasttoken."
        )
    return chosen[0]


def _read_dense(path):
    config = read_json(path, "config.json")
    activation = config.get("activation_function", "torch.nn.modules.linear.Identity")
    if config.get("bias", True) or not activation.endswith("Identity"):
        raise CheckpointError(
            f"{path}/config.json: only bias-free Dense layers with an Identity "
            f"activation are supported (got bias={config.get('bias', True)}, "
            f"activation={activation})."
        )
    return config["out_features"], open_safetensors(path)


def read_tokenizer_proto(directory):
    spm_path = os.path.join(directory, "tokenizer.model")
    if os.path.isfile(spm_path):
        with open(spm_path, "rb") as f:
            return f.read()
    json_path = os.path.join(directory, "tokenizer.json")
    if os.path.isfile(json_path):
        return spm_proto_from_tokenizer_json(json_path)
    raise CheckpointError(
        f"{directory} has no tokenizer: expected tokenizer.model (SentencePiece) "
        "or tokenizer.json."
    )


def _resolve_weight_name(weights, name):
    for prefix in ("", *_WEIGHT_PREFIXES):
        if prefix + name in weights:
            return prefix + name
    raise CheckpointError(
        f"Tensor {name!r} is missing from {weights.path} (looked for it under the "
        f"prefixes {list(_WEIGHT_PREFIXES)} too): the checkpoint is incomplete or "
        "is not a Gemma 3 text model. Download it again."
    )


def backbone_weight_plan(backbone):
    """`(HF name, HF shape, model variable, to_ours, to_hf)` for every weight.

    `to_ours` turns the `Gemma3TextModel` tensor into the variable's layout,
    `to_hf` is its inverse (used by the writers of this layout).
    """
    n, k, h = backbone.num_query_heads, backbone.num_key_value_heads, backbone.head_dim
    d, f = backbone.hidden_dim, backbone.intermediate_dim

    def heads_in(num):  # [num*h, d] <-> (num, d, h)
        to_ours = lambda w: w.reshape(num, h, d).transpose(0, 2, 1)  # noqa: E731
        to_hf = lambda x: x.transpose(0, 2, 1).reshape(num * h, d)  # noqa: E731
        return to_ours, to_hf

    heads_out = (  # [d, n*h] <-> (n, h, d)
        lambda w: w.T.reshape(n, h, d),
        lambda x: x.reshape(n * h, d).T,
    )
    same = (lambda w: w, lambda x: x)
    transpose = (lambda w: w.T, lambda x: x.T)

    embeddings = backbone.token_embedding.embeddings
    plan = [("embed_tokens.weight", tuple(embeddings.shape), embeddings, *same)]
    for i, block in enumerate(backbone.transformer_layers):
        p = f"layers.{i}."
        attention = block.attention
        plan += [
            (p + "input_layernorm.weight", (d,), block.pre_attention_norm.scale, *same),
            (p + "post_attention_layernorm.weight", (d,), block.post_attention_norm.scale, *same),
            (p + "pre_feedforward_layernorm.weight", (d,), block.pre_ffw_norm.scale, *same),
            (p + "post_feedforward_layernorm.weight", (d,), block.post_ffw_norm.scale, *same),
            (p + "self_attn.q_proj.weight", (n * h, d), attention.query_dense.kernel, *heads_in(n)),
            (p + "self_attn.k_proj.weight", (k * h, d), attention.key_dense.kernel, *heads_in(k)),
            (p + "self_attn.v_proj.weight", (k * h, d), attention.value_dense.kernel, *heads_in(k)),
            (p + "self_attn.o_proj.weight", (d, n * h), attention.output_dense.kernel, *heads_out),
            (p + "self_attn.q_norm.weight", (h,), attention.query_norm.scale, *same),
            (p + "self_attn.k_norm.weight", (h,), attention.key_norm.scale, *same),
            (p + "mlp.gate_proj.weight", (f, d), block.ffw_gating.kernel, *transpose),
            (p + "mlp.up_proj.weight", (f, d), block.ffw_gating_2.kernel, *transpose),
            (p + "mlp.down_proj.weight", (d, f), block.ffw_linear.kernel, *transpose),
        ]
    plan.append(("norm.weight", (d,), backbone.final_norm.scale, *same))
    return plan


def load_backbone_weights(backbone, weights):
    """Copies a `Gemma3TextModel` safetensors file into `backbone`.

    Each tensor is read when it is assigned and dropped after (large ones
    mapped from the file where the backend adopts a mapped array), so no
    more than one tensor is held beside the variables.
    """
    map_mode = file_map_mode()
    for name, expected, variable, to_ours, _ in backbone_weight_plan(backbone):
        key = _resolve_weight_name(weights, name)
        shape = weights.shape(key)
        if shape != expected:
            raise CheckpointError(
                f"Tensor {key!r} in {weights.path} has shape {shape}, but the "
                f"model built from config.json needs {expected}. The weights and "
                "config.json disagree."
            )
        value = to_ours(weights.get(key, map_mode))
        assign_weight(variable, value, f"{key!r} in {weights.path}")


def load_huggingface_checkpoint(cls, directory, load_weights=True, dtype=None, **kwargs):
    """Builds an `EmbeddingGemma` of class `cls` from a checkpoint folder."""
    config = read_json(directory, "config.json")
    backbone_kwargs = backbone_kwargs_from_config(config)
    pooling, dense_dirs = _read_modules(directory)
    dense = [_read_dense(path) for path in dense_dirs]
    st_config = read_json(directory, "config_sentence_transformers.json", required=False) or {}
    bert_config = read_json(directory, "sentence_bert_config.json", required=False) or {}
    if bert_config.get("do_lower_case"):
        raise CheckpointError("sentence_bert_config.json: do_lower_case is not supported.")
    prompts = {**DEFAULT_PROMPTS, **(st_config.get("prompts") or {})}
    sequence_length = bert_config.get("max_seq_length") or config.get(
        "max_position_embeddings", 2048
    )

    tokenizer = EmbeddingGemmaTokenizer(proto=read_tokenizer_proto(directory))
    check_vocabulary_fits(
        tokenizer.vocabulary_size(), backbone_kwargs["vocabulary_size"],
        f"{directory}: tokenizer", "config.json vocab_size",
    )
    # With weights to read, variables get no random initial values first.
    build_scope = deferred_variables() if load_weights else contextlib.nullcontext([])
    # Compiled once loaded: the optimizer's variables need values now.
    compile_model = kwargs.pop("compile", True)
    with build_scope as pending:
        backbone = EmbeddingGemmaBackbone(**backbone_kwargs, dtype=dtype)
        preprocessor = EmbeddingGemmaPreprocessor(
            tokenizer, sequence_length=sequence_length, prompts=prompts
        )
        model = cls(
            backbone=backbone,
            preprocessor=preprocessor,
            pooling=pooling,
            projection_units=[units for units, _ in dense],
            compile=False,
            **kwargs,
        )
    if load_weights:
        with filling_deferred_variables():
            _load_weights(model, directory, dense)
        missing = unassigned(pending)
        if missing:
            raise CheckpointError(
                f"{directory} holds no value for {', '.join(missing)}: the checkpoint "
                "is incomplete."
            )
    if compile_model:
        model.compile()
    return model


def _load_weights(model, directory, dense):
    """Reads the backbone's and the projection head's tensors into `model`."""
    load_backbone_weights(model.backbone, open_safetensors(directory))
    for layer, (_, weights) in zip(model.projection_head.dense_layers, dense):
        key = "linear.weight"
        if key not in weights:
            raise CheckpointError(f"Tensor {key!r} is missing from {weights.path}.")
        expected = tuple(layer.kernel.shape)[::-1]
        if weights.shape(key) != expected:
            raise CheckpointError(
                f"Tensor {key!r} in {weights.path} has shape "
                f"{weights.shape(key)}; the projection head needs {expected}."
            )
        assign_weight(layer.kernel, weights.get(key).T, f"{key!r} in {weights.path}")
