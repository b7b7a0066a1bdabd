"""Exporting a quantized model with `dequantize=True`: the float weights its
quantized layers compute with, read through the layers' own forward pass.

| case | expected |
|---|---|
| `dequantized_copy` of an int4 model | float layers; its embeddings equal the int4 model's (int4 is weight-only) |
| int8 / mixed | close (int8 layers also round activations at run time); the original stays quantized |
| int4 model -> sentence-transformers folder | sentence-transformers' embeddings equal the int4 model's to 1e-5 |
| int4 model -> KerasHub preset, GGUF | KerasHub's embeddings equal the int4 model's within its window; GGUF written (float tensors) |
| `--dequantize` with a preset | clear error |
"""

import os

import gguf
import keras
import numpy as np
import pytest
import reference_checkpoints as rc
from test_keras_hub_loading import SHORT
from test_sentence_transformers_export import TEXTS
from test_sentence_transformers_export import load_st

import keras_egemma as eg
from keras_egemma.cli import main
from keras_egemma.quantization.dequantization import dequantized_copy


def quantized(source, mode):
    model = eg.EmbeddingGemma.from_preset(source)
    # Block 8 divides every input size of the 72-wide test models.
    model.quantize(mode, block_size=8)
    return model


@pytest.mark.parametrize("mode,bound", [("int4", 0), ("int8", 0.9995), ("mixed", 0.9995)])
def test_dequantized_copy_computes_what_the_quantized_model_does(st_checkpoint, mode, bound):
    model = quantized(st_checkpoint, mode)
    copy = dequantized_copy(model)
    assert copy.quantization is None and model.quantization["mode"] == mode
    assert all(
        keras.backend.standardize_dtype(v.dtype) == "float32" for v in copy.backbone.weights
    )
    ours, theirs = model.encode_query(TEXTS), copy.encode_query(TEXTS)
    if bound == 0:
        np.testing.assert_allclose(theirs, ours, atol=1e-6, rtol=0)
    else:
        assert np.min(np.sum(ours * theirs, axis=1)) > bound


def test_int4_model_to_sentence_transformers(st_checkpoint, tmp_path):
    model = quantized(st_checkpoint, "int4")
    model.save_to_sentence_transformers(str(tmp_path / "st"), dequantize=True)
    st = load_st(tmp_path / "st")
    np.testing.assert_allclose(st.encode_query(TEXTS), model.encode_query(TEXTS), atol=1e-5,
                               rtol=0)


def test_int4_model_to_keras_hub_and_gguf(keras_hub_pair, tmp_path, capsys):
    model = quantized(keras_hub_pair[1], "int4")
    model.save_to_keras_hub(str(tmp_path / "kh"), dequantize=True)
    prompted = model.preprocessor.format_texts(SHORT, task="query")
    np.testing.assert_allclose(rc.keras_hub_reference_embeddings(str(tmp_path / "kh"), prompted),
                               model.encode_query(SHORT), atol=1e-5, rtol=0)
    model.save_to_preset(str(tmp_path / "int4"))
    assert main(["convert", str(tmp_path / "int4"), str(tmp_path / "m.gguf"), "--to", "gguf",
                 "--type", "f32", "--dequantize"]) == 0
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    assert {t.tensor_type.name for t in reader.tensors} == {"F32"}
    assert main(["convert", str(tmp_path / "int4"), str(tmp_path / "p"), "--dequantize"]) == 1
    assert "--dequantize applies to exports" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "p")
