"""`EmbeddingGemma` -> a GGUF file for llama.cpp and Ollama.

What llama.cpp's own converter (`convert_hf_to_gguf.py`, `EmbeddingGemma`,
run with `--sentence-transformers-dense-modules`) writes for
`google/embeddinggemma-300m`: architecture `gemma-embedding`, the Gemma 3
hyperparameters, the sliding window as serialised (llama.cpp masks
`|i - j| > n_swa / 2`, the reference's rule), the pooling type, the two Dense
heads (`dense_2.weight`, `dense_3.weight` and their feature sizes, which
published GGUF files often lack) and the SentencePiece vocabulary. Tensor
names come from gguf-py's own map of the Hugging Face names; RMSNorm weights
are stored as `1 + w`, as llama.cpp's Gemma code expects.

llama.cpp fixes the layer pattern (five sliding, one full), the sliding
layers' RoPE base (1e4) and the score scale (`head_dim ** -0.5`); a model
outside that is refused. GGUF has no key for prompts: they are written under
`keras_egemma.prompt_names` / `keras_egemma.prompts`, which llama.cpp ignores.
"""

import os

import keras
import numpy as np
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

from keras_egemma.convert.huggingface import backbone_weight_plan
from keras_egemma.io.atomic_saving import save_file_atomically
from keras_egemma.models.backbone import FULL
from keras_egemma.models.backbone import SLIDING
from keras_egemma.quantization.dequantization import dequantized_copy
from keras_egemma.version import __version__

ARCHITECTURE = "gemma-embedding"
FILE_TYPES = ("f32", "f16", "q8_0")
VERSION_KEY = "keras_egemma.version"
GEMMA_TERMS = "https://ai.google.dev/gemma/terms"
_LOCAL_ROPE = 10_000.0
_POOLING = {"mean": "MEAN", "first": "CLS", "last": "LAST"}


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ImportError(
            "Writing GGUF needs the `gguf` package: pip install 'keras-egemma[gguf]'."
        ) from None
    return gguf


def _refuse(reason):
    raise ValueError(f"llama.cpp's gemma-embedding architecture cannot express this model: {reason}")


def check_expressible(model, file_type):
    """Refuses, before anything is written, what llama.cpp would compute
    differently (or a `file_type` it does not know)."""
    if file_type not in FILE_TYPES:
        raise ValueError(f"file_type must be one of {', '.join(FILE_TYPES)}, got {file_type!r}.")
    backbone = model.backbone
    if getattr(model, "quantization", None) is not None:
        _refuse(f"it is quantized ({model.quantization.get('mode')}); export the float model "
                "with file_type='q8_0', or pass dequantize=True.")
    if model.pooling not in _POOLING:
        _refuse(f"it pools with {model.pooling!r}; llama.cpp pools by mean, first or last token.")
    if len(model.projection_head.units) != 2:
        _refuse(f"its head has {len(model.projection_head.units)} dense layers; GGUF has two "
                "(dense_2, dense_3).")
    if list(backbone.layer_types) != [
        SLIDING if i % 6 < 5 else FULL for i in range(backbone.num_layers)
    ]:
        _refuse("its layer types are not five sliding then one full layer, repeated.")
    if backbone.query_pre_attn_scalar != backbone.head_dim:
        _refuse(f"query_pre_attn_scalar is {backbone.query_pre_attn_scalar}; llama.cpp scales "
                f"attention scores by head_dim ** -0.5 ({backbone.head_dim}).")
    if backbone.local_rope_wavelength != _LOCAL_ROPE:
        _refuse(f"the sliding layers' RoPE base is {backbone.local_rope_wavelength}; llama.cpp "
                f"uses {_LOCAL_ROPE:g}.")
    if model.preprocessor is None:
        _refuse("it has no preprocessor, so there is no tokenizer to export.")


def _tensors(model):
    """`(GGUF name, float32 array in the Hugging Face layout)`, one at a time."""
    gguf = _gguf()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA_EMBEDDING, model.backbone.num_layers)
    for hf_name, _, variable, _, to_hf in backbone_weight_plan(model.backbone):
        value = to_hf(np.asarray(keras.ops.convert_to_numpy(variable), np.float32))
        # Gemma's RMSNorm multiplies by (1 + w); llama.cpp's by the stored weight.
        if hf_name.endswith("norm.weight"):
            value = value + 1.0
        yield names.get_name("model." + hf_name, try_suffixes=(".weight",)), value
    for name, layer in zip(("dense_2", "dense_3"), model.projection_head.dense_layers):
        yield f"{name}.weight", np.asarray(keras.ops.convert_to_numpy(layer.kernel), np.float32).T


def _stored(gguf, array, file_type):
    """`(data, raw_dtype)` as llama.cpp's converter stores it: 1-D tensors in
    float32; matrices in f16, or q8_0 when their rows split into 32-blocks."""
    kinds = gguf.GGMLQuantizationType
    if array.ndim == 1 or file_type == "f32":
        return np.ascontiguousarray(array, np.float32), None
    if file_type == "q8_0" and array.shape[-1] % gguf.GGML_QUANT_SIZES[kinds.Q8_0][0] == 0:
        return gguf.quants.quantize(np.ascontiguousarray(array), kinds.Q8_0), kinds.Q8_0
    return np.ascontiguousarray(array, np.float16), None


def _add_vocabulary(writer, gguf, tokenizer, rows):
    """The SentencePiece pieces as llama.cpp's "llama" tokenizer model, padded
    with unused `[PADi]` entries to the embedding table's rows."""
    proto = spm_pb2.ModelProto()
    proto.ParseFromString(tokenizer.proto)
    tokens = [piece.piece.encode("utf-8") for piece in proto.pieces]
    scores = [piece.score for piece in proto.pieces]
    # SentencePiece's piece types and GGUF's token types share their numbers.
    types = [int(piece.type) for piece in proto.pieces]
    tokens += [f"[PAD{i}]".encode() for i in range(len(tokens), rows)]
    scores += [-10000.0] * (rows - len(scores))
    types += [int(gguf.TokenType.UNUSED)] * (rows - len(types))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(tokenizer.start_token_id)
    writer.add_eos_token_id(tokenizer.end_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    writer.add_add_space_prefix(False)


def write_gguf(model, path, file_type):
    """Writes the GGUF file at `path` (no checks, no atomicity)."""
    gguf = _gguf()
    backbone, preprocessor = model.backbone, model.preprocessor
    writer = gguf.GGUFWriter(path, ARCHITECTURE)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name("EmbeddingGemma")
    writer.add_license("gemma")
    writer.add_license_link(GEMMA_TERMS)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[file_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(preprocessor.sequence_length)
    writer.add_embedding_length(backbone.hidden_dim)
    writer.add_block_count(backbone.num_layers)
    writer.add_feed_forward_length(backbone.intermediate_dim)
    writer.add_head_count(backbone.num_query_heads)
    writer.add_head_count_kv(backbone.num_key_value_heads)
    writer.add_key_length(backbone.head_dim)
    writer.add_value_length(backbone.head_dim)
    writer.add_layer_norm_rms_eps(backbone.layer_norm_epsilon)
    writer.add_rope_freq_base(backbone.global_rope_wavelength)
    writer.add_sliding_window(backbone.sliding_window)
    writer.add_pooling_type(getattr(gguf.PoolingType, _POOLING[model.pooling]))
    for name, layer in zip(("dense_2", "dense_3"), model.projection_head.dense_layers):
        in_features, out_features = (int(d) for d in layer.kernel.shape)
        writer.add_dense_features_dims(name, in_features, out_features)
    _add_vocabulary(writer, gguf, preprocessor.tokenizer, backbone.vocabulary_size)
    writer.add_array("keras_egemma.prompt_names", list(preprocessor.prompts))
    writer.add_array("keras_egemma.prompts", list(preprocessor.prompts.values()))
    writer.add_string(VERSION_KEY, __version__)
    for name, array in _tensors(model):
        data, raw_dtype = _stored(gguf, array, file_type)
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _is_ours(path):
    gguf = _gguf()
    try:
        return gguf.GGUFReader(path).get_field(VERSION_KEY) is not None
    except (OSError, ValueError):
        return False


def save_gguf(model, path, file_type="f16", dequantize=False):
    """Saves `model` as a GGUF file, written beside `path` and renamed into place.

    Args:
        model: an `EmbeddingGemma` llama.cpp can express (module docstring).
        path: the `.gguf` file; an existing file is replaced only if this
            function wrote it.
        file_type: `"f32"`, `"f16"` (matrices in float16, the default) or
            `"q8_0"` (matrices in 8-bit blocks of 32).
        dequantize: write a quantized model's weights as the floats its layers
            compute with instead of refusing it.

    Example:
    ```python
    save_gguf(model, "embeddinggemma-f16.gguf")
    # llama-embedding -m embeddinggemma-f16.gguf -p "task: search result | query: red planet?"
    ```
    """
    model = dequantized_copy(model) if dequantize else model
    check_expressible(model, file_type)
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target) or (os.path.exists(target) and not _is_ours(target)):
        raise ValueError(
            f"{target} exists and is not a GGUF file written by keras_egemma, so it will not "
            "be replaced. Choose a new path, or remove it first."
        )
    save_file_atomically(lambda staging: write_gguf(model, staging, file_type), target)
