"""EmbeddingGemma 2 (text): parity with transformers' EmbeddingGemma2TextModel and
sentence-transformers on tiny checkpoints built here (embedding_gemma2_checkpoints), the
multimodal folder's text weights, and this library's preset round trip."""

import logging
import shutil

import embedding_gemma2_checkpoints as e2
import keras
import numpy as np
import pytest

import keras_egemma as eg
from keras_egemma.models.embedding_gemma2_backbone import EmbeddingGemma2Backbone

# 20+ tokens but the first (the sliding radius is 3, so the window binds), different
# lengths (padding); the longest runs the band attention, the short one the dense.
TEXTS = [
    "short",
    "Which planet is known as the Red Planet? Mars has a thin atmosphere and two small moons.",
    "Venus is often called Earth's twin because of its similar size and proximity to the Sun.",
    "A dictionary maps keys to values; lookups, insertions and deletions take constant time "
    "on average, and iteration follows insertion order since Python 3.7.",
    "Numbers 12345 and 3.14159, unicode café naïve 東京 and   extra   spaces.",
]
ATOL = 1e-5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, spm_path):
    return e2.build_embedding_gemma2_checkpoint(
        str(tmp_path_factory.mktemp("eg2")), spm_path=spm_path
    )


@pytest.fixture(scope="module")
def model(checkpoint):
    return eg.EmbeddingGemma.from_preset(checkpoint)


def test_config_is_read_from_checkpoint(model):
    backbone = model.backbone
    assert isinstance(backbone, EmbeddingGemma2Backbone) and type(model) is eg.EmbeddingGemma
    assert backbone.layer_types == e2.LAYER_TYPES and backbone.sliding_window == 3
    attention = [block.attention for block in backbone.transformer_layers]
    assert [(a.head_dim, a.num_key_value_heads) for a in attention] == [
        (8, 2), (16, 1), (8, 2), (16, 1)
    ]
    assert [a.rope_max_wavelength for a in attention[:2]] == [1e4, 1e6]
    assert backbone.per_layer_dim == 16 and model.projection_units == (24,)
    assert model.embedding_dim == 24 and model.pooling == "mean"
    assert model.preprocessor.sequence_length == 256
    assert model.preprocessor.prompt_for("query") == e2.PROMPTS["query"]


def test_hidden_states_match_transformers_per_layer(model, checkpoint):
    ref = e2.reference_hidden_states(checkpoint, TEXTS)
    assert ref["input_ids"].shape[1] > 20
    backbone = model.backbone
    probe = keras.Model(
        backbone.input, [block.output for block in backbone.transformer_layers] + [backbone.output]
    )
    outputs = probe({"token_ids": ref["input_ids"].astype("int32"),
                     "padding_mask": ref["attention_mask"].astype("int32")})
    outputs = [keras.ops.convert_to_numpy(o) for o in outputs]
    real = ref["attention_mask"].astype(bool)
    for i, out in enumerate(outputs[:-1]):
        expected = ref["hidden_states"][i][real]
        np.testing.assert_allclose(out[real], expected, atol=1e-5 * np.abs(expected).max(),
                                   rtol=0, err_msg=f"block {i}")
    # The token embeddings: final norm, then the embedding projection. Relative to their
    # size, as the blocks': transformers' own float32 states are ~1e-5 off its float64 ones
    # here (checked once: 5.6e-6 to 1.1e-5 at this scale, ours 7.6e-6 to 9.1e-6).
    projection = model.projection_head.dense_layers[0]
    tokens = keras.ops.convert_to_numpy(projection(outputs[-1]))[real]
    expected = ref["token_embeddings"][real]
    np.testing.assert_allclose(tokens, expected, atol=1e-5 * np.abs(expected).max(), rtol=0)


@pytest.mark.parametrize("prompt_name", [None, "document"])
def test_embeddings_match_sentence_transformers(model, checkpoint, prompt_name):
    np.testing.assert_allclose(
        model.encode(TEXTS, task=prompt_name),
        e2.reference_embeddings(checkpoint, TEXTS, prompt_name=prompt_name),
        atol=ATOL, rtol=0,
    )


def test_query_and_matryoshka_sizes(model, checkpoint):
    full = e2.reference_embeddings(checkpoint, TEXTS, prompt_name="query")
    np.testing.assert_allclose(model.encode_query(TEXTS), full, atol=ATOL, rtol=0)
    for dim in (16, 8):
        expected = full[:, :dim] / np.linalg.norm(full[:, :dim], axis=1, keepdims=True)
        np.testing.assert_allclose(model.encode_query(TEXTS, dim=dim), expected, atol=ATOL)


def test_batch_and_padding_invariance(model):
    batched = model.encode(TEXTS, task="STS")
    for i in (0, 3):  # the shortest and the longest, each alone
        np.testing.assert_allclose(batched[i], model.encode(TEXTS[i], task="STS"), atol=1e-6,
                                   rtol=0)


def test_multimodal_folder_loads_its_text_model(tmp_path, spm_path, model, caplog):
    folder = e2.build_embedding_gemma2_checkpoint(
        str(tmp_path / "mm"), spm_path=spm_path, multimodal=True
    )
    with caplog.at_level(logging.WARNING, logger="keras_egemma"):
        loaded = eg.EmbeddingGemma.from_preset(folder)
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and "vision" in skipped[0], skipped
    # The same text weights (seed) as `model`, whose parity is tested above.
    np.testing.assert_allclose(loaded.encode(TEXTS), model.encode(TEXTS), atol=1e-6, rtol=0)


def test_round_trips_through_own_preset(model, tmp_path):
    model.save_to_preset(str(tmp_path / "preset"))
    loaded = eg.EmbeddingGemma.from_preset(str(tmp_path / "preset"))
    assert isinstance(loaded.backbone, EmbeddingGemma2Backbone) and type(loaded) is eg.EmbeddingGemma
    assert loaded.backbone.get_config() == model.backbone.get_config()
    for a, b in zip(loaded.weights, model.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    np.testing.assert_array_equal(loaded.encode_query(TEXTS), model.encode_query(TEXTS))
    # The preprocessor alone too (KerasHub would look for a subclass for this backbone).
    preprocessor = eg.EmbeddingGemmaPreprocessor.from_preset(str(tmp_path / "preset"))
    assert preprocessor.get_config() == model.preprocessor.get_config()


@pytest.mark.parametrize("writer", ["save_to_sentence_transformers", "save_to_keras_hub",
                                    "save_to_gguf"])
def test_foreign_writers_refuse_it_and_write_nothing(model, tmp_path, writer):
    path = tmp_path / "out"
    with pytest.raises(ValueError, match="EmbeddingGemma2Backbone.*save_to_preset"):
        getattr(model, writer)(str(path))
    assert not path.exists() and not list(tmp_path.iterdir())


def test_a_folder_without_prompts_says_which_it_uses(checkpoint, tmp_path, caplog):
    folder = shutil.copytree(checkpoint, tmp_path / "no_prompts")
    (folder / "config_sentence_transformers.json").write_text('{"prompts": {}}')
    with caplog.at_level(logging.WARNING, logger="keras_egemma"):
        loaded = eg.EmbeddingGemma.from_preset(str(folder), load_weights=False)
    said = [r.getMessage() for r in caplog.records if "declares no prompts" in r.getMessage()]
    assert len(said) == 1 and "task: search result | query: " in said[0], said
    assert loaded.preprocessor.prompts == {}
