"""A KerasHub `Gemma3Backbone(is_embedding_model=True)` preset built here loads,
gives KerasHub's embeddings where KerasHub's window agrees with the reference,
and the reference's (not KerasHub's) beyond it."""

import numpy as np
import pytest
import reference_checkpoints as rc

import keras_egemma as eg

SHORT = ["Which planet is red?", "Mars is red.", "A short document."]
LONG = [
    " ".join(["The quick brown fox jumps over the lazy dog and keeps running."] * 8),
    " ".join(["Python dictionaries map keys to values with fast lookups."] * 9),
]


@pytest.fixture(scope="module")
def loaded(keras_hub_pair):
    return eg.EmbeddingGemma.from_preset(keras_hub_pair[0])


def test_matches_keras_hub_on_inputs_within_the_window(loaded, keras_hub_pair):
    prompted = loaded.preprocessor.format_texts(SHORT, task="query")
    lengths = [len(ids) for ids in loaded.preprocessor.tokenize_texts(prompted)]
    assert max(lengths) <= 32
    expected = rc.keras_hub_reference_embeddings(keras_hub_pair[0], prompted)
    np.testing.assert_allclose(loaded.encode_query(SHORT), expected, atol=1e-5, rtol=0)


def test_matches_reference_not_keras_hub_beyond_the_window(loaded, keras_hub_pair):
    kh_dir, st_dir = keras_hub_pair
    prompted = loaded.preprocessor.format_texts(LONG, task="document")
    assert min(len(ids) for ids in loaded.preprocessor.tokenize_texts(prompted)) > 64
    ours = loaded.encode_document(LONG)
    np.testing.assert_allclose(
        ours, rc.reference_embeddings(st_dir, LONG, kind="document"), atol=1e-5, rtol=0
    )
    keras_hub = rc.keras_hub_reference_embeddings(kh_dir, prompted)
    assert np.abs(ours - keras_hub).max() > 1e-4


def test_config_and_prompts(loaded):
    config = loaded.backbone.get_config()
    assert config["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    assert config["sliding_window"] == 64
    assert loaded.projection_units == (288, 72)
    assert loaded.preprocessor.prompt_for("STS") == "task: sentence similarity | query: "


def test_kaggle_handle_uses_the_same_converter(monkeypatch, keras_hub_pair):
    from keras_egemma.io import preset_loading as loading

    seen = []
    monkeypatch.setattr(loading, "download_kaggle", lambda h: seen.append(h) or keras_hub_pair[0])
    model = eg.EmbeddingGemma.from_preset("kaggle://keras/embeddinggemma/keras/embedding_gemma3_300m/2")
    assert seen == ["keras/embeddinggemma/keras/embedding_gemma3_300m/2"]
    assert model.encode_query(SHORT).shape == (3, 72)
