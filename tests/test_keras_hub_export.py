"""`save_to_keras_hub` / `convert --to keras-hub`, checked by keras-hub itself:
`Gemma3Backbone.from_preset` and `Gemma3Tokenizer.from_preset` load the preset
and give our embeddings on texts within KerasHub's window.

| case | expected |
|---|---|
| exported model (window 64), texts <= 32 tokens | keras-hub's `pooled_output` = ours to 1e-5 |
| a model changed by a few `fit` steps | same |
| texts beyond the window | keras-hub differs (> 1e-4, its one-token window difference); `from_preset` of the export gives ours |
| KerasHub preset -> here -> KerasHub preset | every weight bit-identical, same SentencePiece file |
| `query_pre_attn_scalar != head_dim`, another layer pattern, attention pooling, quantized, a non-empty folder | `ValueError` saying why; nothing written |
"""

import os

import keras
import keras_hub
import numpy as np
import pytest
import reference_checkpoints as rc
from test_keras_hub_loading import LONG
from test_keras_hub_loading import SHORT

import keras_egemma as eg
from keras_egemma.cli import main

ATOL = 1e-5


def keras_hub_embeddings(model, preset, texts):
    prompted = model.preprocessor.format_texts(texts, task="query")
    return rc.keras_hub_reference_embeddings(str(preset), prompted)


@pytest.fixture(scope="module")
def exported(keras_hub_pair, tmp_path_factory):
    model = eg.EmbeddingGemma.from_preset(keras_hub_pair[1])
    preset = tmp_path_factory.mktemp("kh_export") / "preset"
    model.save_to_keras_hub(str(preset))
    return model, preset


def test_keras_hub_gives_our_embeddings_within_its_window(exported):
    model, preset = exported
    lengths = [len(ids) for ids in model.preprocessor.tokenize_texts(
        model.preprocessor.format_texts(SHORT, task="query"))]
    assert max(lengths) <= 32
    np.testing.assert_allclose(
        keras_hub_embeddings(model, preset, SHORT), model.encode_query(SHORT), atol=ATOL, rtol=0
    )
    tokenizer = keras_hub.models.Gemma3Tokenizer.from_preset(str(preset))
    theirs = keras.ops.convert_to_numpy(tokenizer("Mars is red.")).tolist()
    assert theirs == [int(i) for i in model.preprocessor.tokenizer.tokenize(["Mars is red."])[0]]


def test_beyond_the_window_keras_hub_differs_and_we_read_ours_back(exported):
    model, preset = exported
    ours = model.encode_query(LONG)
    assert np.abs(keras_hub_embeddings(model, preset, LONG) - ours).max() > 1e-4
    back = eg.EmbeddingGemma.from_preset(str(preset))
    np.testing.assert_allclose(back.encode_query(LONG), ours, atol=ATOL, rtol=0)


def test_fine_tuned_model(keras_hub_pair, tmp_path):
    import test_training

    model = eg.EmbeddingGemma.from_preset(keras_hub_pair[1])
    before = model.encode_query(SHORT)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), mrl_dims=(64, 32))
    model.fit(test_training.synthetic_retrieval(16, seed=5), batch_size=8, epochs=1,
              sequence_length=24, verbose=0)
    assert np.abs(model.encode_query(SHORT) - before).max() > 1e-2
    model.save_to_keras_hub(str(tmp_path / "tuned"))
    np.testing.assert_allclose(
        keras_hub_embeddings(model, tmp_path / "tuned", SHORT), model.encode_query(SHORT),
        atol=ATOL, rtol=0,
    )


def test_keras_hub_round_trip_is_bit_identical(keras_hub_pair, tmp_path):
    source = keras_hub_pair[0]
    dest = tmp_path / "again"
    assert main(["convert", source, str(dest), "--to", "keras-hub"]) == 0
    theirs = keras_hub.models.Gemma3Backbone.from_preset(source)
    ours = keras_hub.models.Gemma3Backbone.from_preset(str(dest))
    assert ours.get_config() == theirs.get_config()
    for a, b in zip(ours.weights, theirs.weights, strict=True):
        assert a.path == b.path
        assert keras.ops.convert_to_numpy(a).tobytes() == keras.ops.convert_to_numpy(b).tobytes()
    spm = os.path.join("assets", "tokenizer", "vocabulary.spm")
    with open(os.path.join(source, spm), "rb") as f:
        assert (dest / spm).read_bytes() == f.read()
    # Writing again over our own preset replaces it.
    assert main(["convert", source, str(dest), "--to", "keras-hub"]) == 0


def refused(model, folder, match):
    before = sorted(os.listdir(folder.parent))
    with pytest.raises(ValueError, match=match):
        model.save_to_keras_hub(str(folder))
    assert sorted(os.listdir(folder.parent)) == before


def test_refusals_leave_nothing_written(exported, st_checkpoint, st_checkpoint_native, tmp_path):
    model, _ = exported
    refused(eg.EmbeddingGemma.from_preset(st_checkpoint), tmp_path / "scale",
            "query_pre_attn_scalar is 24; KerasHub 0.32 scales")
    refused(eg.EmbeddingGemma.from_preset(st_checkpoint_native), tmp_path / "layers",
            "layer types")
    attention = eg.EmbeddingGemma(
        backbone=model.backbone, preprocessor=model.preprocessor, pooling="attention",
        projection_units=model.projection_units,
    )
    refused(attention, tmp_path / "attention", "pools with 'attention'")
    quantized = eg.EmbeddingGemma.from_preset(str(exported[1]))
    quantized.quantize("int8")
    refused(quantized, tmp_path / "quantized", "quantized")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused(model, mine, "exists and is not a KerasHub preset written by keras_egemma")
    assert os.listdir(mine) == ["notes.txt"]
