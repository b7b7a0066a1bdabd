"""Initialising EmbeddingGemma from generative Gemma 3 checkpoints (the paper's
Table 2): the copied transformer must compute what the source network computes
with bidirectional attention, as run by transformers / KerasHub themselves."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import reference_checkpoints as rc
from safetensors.numpy import load_file
from safetensors.numpy import save_file

import keras_egemma as eg
from keras_egemma.io.errors import CheckpointError

# One batch shape for every test (JAX compiles each op once per shape). The
# first text is long enough for the sliding windows to bind and holds
# `<end_of_image>` (id 7), which T5Gemma 2 embeds separately.
TEXTS = [
    "Which planet is known as the Red Planet? Mars <end_of_image>, the fourth planet "
    "from the Sun.",
    "A short document.",
]


def _token_batch(model, texts=TEXTS):
    """The model's own packing: `<bos> ids <eos>`, right-padded to the longest."""
    pre = model.preprocessor
    ids = pre.tokenize_texts(pre.format_texts(texts, task="query"))
    token_ids = np.zeros((len(ids), max(map(len, ids))), "int32")
    padding_mask = np.zeros_like(token_ids)
    for row, sequence in enumerate(ids):
        token_ids[row, : len(sequence)] = sequence
        padding_mask[row, : len(sequence)] = 1
    return token_ids, padding_mask


def _assert_states_close(model, token_ids, padding_mask, expected):
    ours = keras.ops.convert_to_numpy(
        model.backbone({"token_ids": token_ids, "padding_mask": padding_mask})
    )
    real = padding_mask.astype(bool)
    np.testing.assert_allclose(ours[real], expected[real], atol=3e-5, rtol=0)


def _copy_config_only(source, target, edit):
    """A folder with `source`'s config.json edited by `edit` (enough to hit
    errors raised before any weights are read)."""
    os.makedirs(target)
    with open(os.path.join(source, "config.json")) as f:
        config = json.load(f)
    edit(config)
    with open(os.path.join(target, "config.json"), "w") as f:
        json.dump(config, f)
    return target


# --- Decoder-only Gemma 3 (Hugging Face) -------------------------------------


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory, spm_path):
    """Gemma3ForCausalLM, sharded: 5 sliding layers (causal window 8) + 1 full."""
    return rc.build_gemma3_decoder_checkpoint(
        str(tmp_path_factory.mktemp("decoder")), spm_path=spm_path, max_shard_size="100KB"
    )


@pytest.fixture(scope="module")
def decoder_model(decoder_dir):
    return eg.EmbeddingGemma.from_decoder(decoder_dir, seed=0)


def test_decoder_becomes_the_bidirectional_network(decoder_model, decoder_dir):
    token_ids, padding_mask = _token_batch(decoder_model)
    assert 20 < token_ids.shape[1] <= 64
    expected = rc.gemma3_bidirectional_hidden_states(decoder_dir, token_ids, padding_mask)
    _assert_states_close(decoder_model, token_ids, padding_mask, expected)


def test_decoder_config_mapping(decoder_model):
    config = decoder_model.backbone.get_config()
    assert config["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    # The causal window number is kept: +-4 tokens, as transformers' flag gives.
    assert config["sliding_window"] == 8
    assert config["query_pre_attn_scalar"] == 24
    assert (config["global_rope_wavelength"], config["local_rope_wavelength"]) == (1e6, 1e4)
    assert decoder_model.projection_units == (3072, 768)
    assert decoder_model.preprocessor.prompt_for("query") == "task: search result | query: "
    embeddings = decoder_model.encode_query(TEXTS)
    assert embeddings.shape == (2, 768)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_text_model_folder(tmp_path, spm_path):
    folder = rc.build_gemma3_decoder_checkpoint(
        str(tmp_path / "text_model"), spm_path=spm_path, architecture="text_model",
        num_layers=2, seed=5,
    )
    model = eg.EmbeddingGemma.from_decoder(folder, projection_units=(), pooling="first")
    token_ids, padding_mask = _token_batch(model)
    expected = rc.gemma3_bidirectional_hidden_states(folder, token_ids, padding_mask)
    _assert_states_close(model, token_ids, padding_mask, expected)
    assert model.embedding_dim == 72


def test_multimodal_gemma3_folder(tmp_path, decoder_dir, decoder_model):
    """A `gemma3` config nests the text config; tensors are `model.language_model.*`."""
    folder = tmp_path / "multimodal"
    folder.mkdir()
    with open(os.path.join(decoder_dir, "config.json")) as f:
        text_config = json.load(f)
    config = {"model_type": "gemma3", "text_config": text_config, "vision_config": {}}
    (folder / "config.json").write_text(json.dumps(config))
    with open(os.path.join(decoder_dir, "model.safetensors.index.json")) as f:
        shards = set(json.load(f)["weight_map"].values())
    tensors = {}
    for shard in shards:
        for name, value in load_file(os.path.join(decoder_dir, shard)).items():
            tensors["model.language_model." + name[len("model.") :]] = value
    save_file(tensors, str(folder / "model.safetensors"))
    shutil.copyfile(os.path.join(decoder_dir, "tokenizer.model"), folder / "tokenizer.model")

    model = eg.EmbeddingGemma.from_decoder(str(folder))
    for ours, reference in zip(model.backbone.weights, decoder_model.backbone.weights):
        np.testing.assert_array_equal(ours.numpy(), reference.numpy())


def test_new_head_is_seeded_and_window_can_be_overridden(decoder_dir, decoder_model):
    same = eg.EmbeddingGemma.from_decoder(decoder_dir, seed=0, sliding_window=14)
    other = eg.EmbeddingGemma.from_decoder(decoder_dir, seed=1)
    assert same.backbone.sliding_window == 14
    head = [w.numpy() for w in decoder_model.projection_head.weights]
    for a, b in zip(head, [w.numpy() for w in same.projection_head.weights]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(head[0], other.projection_head.weights[0].numpy())
    for a, b in zip(decoder_model.backbone.weights, other.backbone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_parameters": {
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        }},
        {"rope_parameters": None, "rope_theta": 1e6, "rope_local_base_freq": 1e4,
         "rope_scaling": {"rope_type": "linear", "factor": 8.0}},
    ],
    ids=["transformers5", "transformers4"],
)
def test_rope_scaling_is_refused(tmp_path, decoder_dir, rope):
    folder = _copy_config_only(decoder_dir, str(tmp_path / "scaled"), lambda c: c.update(rope))
    with pytest.raises(CheckpointError, match="scales RoPE.*linear.*cannot represent"):
        eg.EmbeddingGemma.from_decoder(folder)


def test_decoder_errors(tmp_path, decoder_dir):
    t5 = _copy_config_only(
        decoder_dir, str(tmp_path / "t5"), lambda c: c.update(model_type="t5gemma2")
    )
    with pytest.raises(CheckpointError, match="EmbeddingGemma.from_t5gemma"):
        eg.EmbeddingGemma.from_decoder(t5)
    capped = _copy_config_only(
        decoder_dir, str(tmp_path / "capped"), lambda c: c.update(attn_logit_softcapping=50.0)
    )
    with pytest.raises(CheckpointError, match="attn_logit_softcapping"):
        eg.EmbeddingGemma.from_decoder(capped)
    with pytest.raises(ValueError, match="sliding_window"):
        eg.EmbeddingGemma.from_decoder(decoder_dir, sliding_window=0)


# --- Decoder-only Gemma 3 (KerasHub preset) ----------------------------------


@pytest.fixture(scope="module")
def keras_hub_decoder(tmp_path_factory, spm_path):
    """Causal window 128: KerasHub's own bidirectional window is symmetric up
    to 64 tokens, so KerasHub can serve as the oracle on `TEXTS`."""
    return rc.build_keras_hub_decoder_preset(
        str(tmp_path_factory.mktemp("kh_decoder")), spm_path=spm_path,
        sliding_window_size=128, seed=2,
    )


def test_keras_hub_decoder_becomes_the_bidirectional_network(keras_hub_decoder):
    model = eg.EmbeddingGemma.from_decoder(keras_hub_decoder, projection_units=(96, 48))
    token_ids, padding_mask = _token_batch(model)
    expected = rc.keras_hub_bidirectional_hidden_states(keras_hub_decoder, token_ids, padding_mask)
    _assert_states_close(model, token_ids, padding_mask, expected)
    assert model.backbone.sliding_window == 128
    assert model.embedding_dim == 48


def test_keras_hub_rope_scaling_is_refused(tmp_path, keras_hub_decoder):
    def scale(config):
        config["config"]["global_rope_scaling_factor"] = 8.0

    folder = _copy_config_only(keras_hub_decoder, str(tmp_path / "scaled"), scale)
    with pytest.raises(CheckpointError, match="global_rope_scaling_factor=8.0"):
        eg.EmbeddingGemma.from_decoder(folder)


# --- T5Gemma ----------------------------------------------------------------


@pytest.fixture(scope="module")
def t5gemma2_dir(tmp_path_factory, spm_path):
    """Odd window 9 (+-4, exactly representable); `<end_of_image>` (id 7)
    has its own embedding."""
    return rc.build_t5gemma2_checkpoint(
        str(tmp_path_factory.mktemp("t5gemma2")), spm_path=spm_path, seed=4
    )


def test_t5gemma2_encoder_is_copied(t5gemma2_dir):
    model = eg.EmbeddingGemma.from_t5gemma(t5gemma2_dir, seed=0)
    token_ids, padding_mask = _token_batch(model)
    assert 7 in token_ids[0]
    expected = rc.t5gemma2_encoder_hidden_states(t5gemma2_dir, token_ids, padding_mask)
    _assert_states_close(model, token_ids, padding_mask, expected)
    assert model.backbone.sliding_window == 9
    assert model.encode_document(TEXTS).shape == (2, 768)


def test_t5gemma_v1_is_refused_with_the_reason(tmp_path):
    from transformers import T5GemmaConfig

    T5GemmaConfig().save_pretrained(str(tmp_path))
    with pytest.raises(CheckpointError, match="Gemma 2.*query/key RMSNorm.*soft-capped at 50.0"):
        eg.EmbeddingGemma.from_t5gemma(str(tmp_path))


def test_t5gemma_errors(tmp_path, decoder_dir):
    with pytest.raises(CheckpointError, match="EmbeddingGemma.from_decoder"):
        eg.EmbeddingGemma.from_t5gemma(decoder_dir)
