"""`save_to_gguf` / `convert --to gguf`: the file read back with gguf-py's own
reader has what llama.cpp's converter writes for EmbeddingGemma with its Dense
modules, and its tensors are the sentence-transformers export's (the layout
`tests/test_sentence_transformers_export.py` proves against
sentence-transformers) in llama.cpp's conventions. llama.cpp itself runs the
file in `benchmarks/gguf_parity.py` (not a CI test: it builds llama.cpp).

| case | expected |
|---|---|
| f32 / f16 / q8_0 | architecture `gemma-embedding`, every tensor name and shape, `dense_2` / `dense_3` and their sizes, pooling, window, vocabulary and ids, licence, prompts |
| f32 tensors | equal the sentence-transformers export's (`1 + w` for RMSNorm weights) |
| f16 / q8_0 tensors | within their rounding of the f32 values; q8_0 blocks where rows split into 32 |
| a file it did not write, a folder, attention pooling, another layer pattern, `query_pre_attn_scalar != head_dim`, quantized, unknown `--type`, `--type` without `--to gguf` | clear error; nothing written |
"""

import os

import gguf
import numpy as np
import pytest
import sentencepiece

import keras_egemma as eg
from keras_egemma.cli import main
from keras_egemma.convert.huggingface import open_safetensors


@pytest.fixture(scope="module")
def model(keras_hub_pair):
    # The Hugging Face twin of the KerasHub fixture: query_pre_attn_scalar == head_dim.
    model = eg.EmbeddingGemma.from_preset(keras_hub_pair[1])
    model.preprocessor.prompts["my support search"] = "task: support ticket | query: "
    return model


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    for file_type in ("f32", "f16", "q8_0"):
        model.save_to_gguf(str(folder / f"{file_type}.gguf"), file_type=file_type)
    model.save_to_sentence_transformers(str(folder / "st"))
    return folder


def field(reader, key):
    value = reader.get_field(key)
    assert value is not None, key
    return value.contents()


def expected_tensors(folder):
    """The sentence-transformers export's tensors under llama.cpp's names."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA_EMBEDDING, 6)
    weights = open_safetensors(str(folder))
    out = {}
    for key in weights.keys():
        value = np.asarray(weights.get(key), np.float32)
        out[names.get_name("model." + key, try_suffixes=(".weight",))] = (
            value + 1 if key.endswith("norm.weight") else value
        )
    for dense in ("2_Dense", "3_Dense"):
        out[f"dense_{dense[0]}.weight"] = np.asarray(
            open_safetensors(str(folder / dense)).get("linear.weight")
        )
    return out


@pytest.mark.parametrize("file_type", ["f32", "f16", "q8_0"])
def test_structure_and_metadata(files, model, spm_path, file_type):
    reader = gguf.GGUFReader(str(files / f"{file_type}.gguf"))
    arch = "gemma-embedding"
    assert field(reader, "general.architecture") == arch
    assert field(reader, "general.license") == "gemma"
    expected_type = {"f32": 0, "f16": 1, "q8_0": 7}[file_type]
    assert field(reader, "general.file_type") == expected_type
    backbone = model.backbone
    for key, value in {
        "block_count": 6, "embedding_length": 72, "feed_forward_length": 96,
        "context_length": 2048, "attention.head_count": 3, "attention.head_count_kv": 1,
        "attention.key_length": 32, "attention.value_length": 32,
        "attention.sliding_window": 64, "pooling_type": int(gguf.PoolingType.MEAN),
        "dense_2_feat_in": 72, "dense_2_feat_out": 288,
        "dense_3_feat_in": 288, "dense_3_feat_out": 72,
    }.items():
        assert field(reader, f"{arch}.{key}") == value, key
    assert field(reader, f"{arch}.rope.freq_base") == backbone.global_rope_wavelength
    assert np.isclose(field(reader, f"{arch}.attention.layer_norm_rms_epsilon"), 1e-6)

    spm = sentencepiece.SentencePieceProcessor(model_file=spm_path)
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert field(reader, "tokenizer.ggml.model") == "llama"
    assert len(tokens) == backbone.vocabulary_size
    assert tokens[: spm.get_piece_size()] == [spm.id_to_piece(i) for i in range(spm.get_piece_size())]
    assert field(reader, "tokenizer.ggml.token_type")[:5] == [3, 3, 3, 2, 4]  # pad eos bos unk mask
    for key, value in {"bos_token_id": 2, "eos_token_id": 1, "padding_token_id": 0,
                       "unknown_token_id": 3, "add_bos_token": True, "add_eos_token": True,
                       "add_space_prefix": False}.items():
        assert field(reader, f"tokenizer.ggml.{key}") == value, key
    prompts = dict(zip(field(reader, "keras_egemma.prompt_names"),
                       field(reader, "keras_egemma.prompts")))
    assert prompts == model.preprocessor.prompts

    shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}
    expected = expected_tensors(files / "st")
    assert {"dense_2.weight", "dense_3.weight", "token_embd.weight", "output_norm.weight",
            "blk.5.post_ffw_norm.weight", "blk.0.attn_k_norm.weight"} <= set(shapes)
    assert shapes == {name: value.shape for name, value in expected.items()}
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["output_norm.weight"] == "F32"
    matrix = {"f32": {"F32"}, "f16": {"F16"}, "q8_0": {"Q8_0", "F16"}}[file_type]
    assert {types[n] for n, v in expected.items() if v.ndim == 2} <= matrix
    if file_type == "q8_0":
        # Rows of 96 and 288 split into blocks of 32; rows of 72 stay f16.
        assert types["blk.0.ffn_down.weight"] == types["dense_3.weight"] == "Q8_0"


@pytest.mark.parametrize("file_type,atol", [("f32", 0), ("f16", 2e-3), ("q8_0", 2e-2)])
def test_tensor_values(files, file_type, atol):
    reader = gguf.GGUFReader(str(files / f"{file_type}.gguf"))
    expected = expected_tensors(files / "st")
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        values = np.asarray(values, np.float32).reshape(expected[tensor.name].shape)
        scale = np.abs(expected[tensor.name]).max()
        np.testing.assert_allclose(values, expected[tensor.name], atol=atol * scale, rtol=0,
                                   err_msg=tensor.name)


def test_cli_and_replacing_our_own_file(keras_hub_pair, tmp_path, capsys):
    dest = tmp_path / "m.gguf"
    for _ in range(2):  # the second run replaces the file the first one wrote
        assert main(["convert", keras_hub_pair[1], str(dest), "--to", "gguf", "--type",
                     "q8_0"]) == 0
    assert "as a GGUF file" in capsys.readouterr().out
    assert gguf.GGUFReader(str(dest)).get_field("general.file_type").contents() == 7
    assert os.listdir(tmp_path) == ["m.gguf"]
    assert main(["convert", keras_hub_pair[1], str(tmp_path / "p"), "--type", "f16"]) == 1
    assert "--type applies to --to gguf only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", keras_hub_pair[1], str(tmp_path / "x.gguf"), "--to", "gguf",
              "--type", "q4_k"])
    assert "invalid choice: 'q4_k'" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["m.gguf"]


def test_refusals_leave_nothing_written(model, st_checkpoint, st_checkpoint_native, tmp_path):
    def refused(candidate, path, match, **kwargs):
        before = sorted(os.listdir(tmp_path))
        with pytest.raises(ValueError, match=match):
            candidate.save_to_gguf(str(path), **kwargs)
        assert sorted(os.listdir(tmp_path)) == before

    mine = tmp_path / "notes.gguf"
    mine.write_text("not a model")
    refused(model, mine, "exists and is not a GGUF file written by keras_egemma")
    assert mine.read_text() == "not a model"
    refused(model, tmp_path, "exists and is not a GGUF file")
    refused(model, tmp_path / "x.gguf", "file_type must be one of", file_type="q4_0")
    refused(eg.EmbeddingGemma.from_preset(st_checkpoint), tmp_path / "s.gguf",
            "query_pre_attn_scalar is 24")
    refused(eg.EmbeddingGemma.from_preset(st_checkpoint_native), tmp_path / "l.gguf",
            "layer types")
    attention = eg.EmbeddingGemma(
        backbone=model.backbone, preprocessor=model.preprocessor, pooling="attention",
        projection_units=model.projection_units,
    )
    refused(attention, tmp_path / "a.gguf", "pools with 'attention'")
    quantized = eg.EmbeddingGemma.from_preset(st_checkpoint)
    quantized.quantize("int8")
    refused(quantized, tmp_path / "q.gguf", "quantized")
