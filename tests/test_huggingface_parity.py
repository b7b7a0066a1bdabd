"""Parity with the PyTorch reference (sentence-transformers + transformers'
Gemma3TextModel) on tiny checkpoints of the published layout built here."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import reference_checkpoints as rc

import keras_egemma as eg

# 20+ tokens each (the window of 8 binds), different lengths (padding).
TEXTS = [
    "Which planet is known as the Red Planet? Mars has a thin atmosphere and two small moons.",
    "Venus is often called Earth's twin because of its similar size and proximity to the Sun.",
    "A dictionary maps keys to values; lookups, insertions and deletions take constant time "
    "on average, and iteration follows insertion order since Python 3.7.",
    "short text",
    "Numbers 12345 and 3.14159, unicode café naïve 東京, emoji 🚀 and   extra   spaces.",
]
PROMPT_NAMES = ["STS", "Clustering", "Classification", "Retrieval-document", "BitextMining",
                "InstructionRetrieval", "Summarization", "PairClassification"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def model(st_checkpoint):
    return eg.EmbeddingGemma.from_preset(st_checkpoint)


def test_token_ids_match_reference_tokenizer(model, st_checkpoint):
    prompted = model.preprocessor.format_texts(TEXTS, task="query")
    ours = model.preprocessor.tokenize_texts(prompted)
    ref = rc.reference_token_embeddings(st_checkpoint, prompted)
    for row, ids in enumerate(ours):
        n = int(ref["attention_mask"][row].sum())
        assert ids == ref["input_ids"][row, :n].tolist()
    assert max(len(ids) for ids in ours) > 20


def test_encode_query_and_document_match(model, st_checkpoint):
    np.testing.assert_allclose(
        model.encode_query(TEXTS), rc.reference_embeddings(st_checkpoint, TEXTS, kind="query"),
        atol=ATOL, rtol=0,
    )
    np.testing.assert_allclose(
        model.encode_document(TEXTS),
        rc.reference_embeddings(st_checkpoint, TEXTS, kind="document"), atol=ATOL, rtol=0,
    )
    np.testing.assert_allclose(
        model.encode(TEXTS), rc.reference_embeddings(st_checkpoint, TEXTS, kind=None),
        atol=ATOL, rtol=0,
    )


@pytest.mark.parametrize("name", PROMPT_NAMES)
def test_encode_task_matches_prompt_name(model, st_checkpoint, name):
    np.testing.assert_allclose(
        model.encode(TEXTS, task=name), rc.reference_embeddings(st_checkpoint, TEXTS, kind=name),
        atol=ATOL, rtol=0,
    )


def test_document_titles_match_reference_prompt(model, st_checkpoint):
    st = rc._sentence_transformer(st_checkpoint)
    titles = ["Mars", None, "Python dict", "x", "Tokyo"]
    expected = np.stack([
        st.encode([t], prompt=f"title: {title or 'none'} | text: ", convert_to_numpy=True)[0]
        for t, title in zip(TEXTS, titles)
    ])
    np.testing.assert_allclose(model.encode_document(TEXTS, titles=titles), expected, atol=ATOL)


def test_token_embeddings_match_gemma3_text_model_per_layer(model, st_checkpoint):
    prompted = model.preprocessor.format_texts(TEXTS, task="STS")
    ref = rc.reference_token_embeddings(st_checkpoint, prompted, output_hidden_states=True)
    backbone = model.backbone
    probe = keras.Model(
        backbone.input,
        [block.output for block in backbone.transformer_layers] + [backbone.output],
    )
    inputs = {"token_ids": ref["input_ids"].astype("int32"),
              "padding_mask": ref["attention_mask"].astype("int32")}
    outputs = [keras.ops.convert_to_numpy(o) for o in probe(inputs)]
    real = ref["attention_mask"].astype(bool)
    for i, out in enumerate(outputs[:-1]):
        expected = ref["hidden_states"][i + 1]
        scale = np.abs(expected[real]).max()
        np.testing.assert_allclose(out[real], expected[real], atol=1e-5 * scale, rtol=0,
                                   err_msg=f"block {i}")
    np.testing.assert_allclose(outputs[-1][real], ref["last_hidden_state"][real], atol=1e-5)


def test_other_layer_mix_and_native_layout(st_checkpoint_native):
    model = eg.EmbeddingGemma.from_preset(st_checkpoint_native)
    assert model.backbone.layer_types[1] == "full_attention"
    np.testing.assert_allclose(
        model.encode(TEXTS, task="STS"),
        rc.reference_embeddings(st_checkpoint_native, TEXTS, kind="STS"), atol=ATOL, rtol=0,
    )


def test_config_is_read_from_checkpoint(model, st_checkpoint):
    config = model.backbone.get_config()
    assert config["query_pre_attn_scalar"] == 24 and config["head_dim"] == 32
    assert config["sliding_window"] == 8
    assert config["global_rope_wavelength"] == 1e6 and config["local_rope_wavelength"] == 1e4
    assert model.preprocessor.sequence_length == 2048
    assert model.preprocessor.prompts["query"] == "task: search result | query: "
    assert model.projection_units == (288, 72)


def test_matryoshka_sizes_match_truncated_reference(model, st_checkpoint):
    full = rc.reference_embeddings(st_checkpoint, TEXTS, kind="query")
    for dim in (48, 32, 16):
        expected = full[:, :dim] / np.linalg.norm(full[:, :dim], axis=1, keepdims=True)
        np.testing.assert_allclose(model.encode_query(TEXTS, dim=dim), expected, atol=ATOL)


def test_hf_checkpoint_round_trips_through_preset(model, tmp_path):
    model.save_to_preset(str(tmp_path / "p"))
    loaded = eg.EmbeddingGemma.from_preset(str(tmp_path / "p"))
    np.testing.assert_array_equal(loaded.encode_query(TEXTS), model.encode_query(TEXTS))


def write_sharded_checkpoint(src, dst, max_shard_size="100KB"):
    """`src` with its `model.safetensors` re-saved by transformers as shards
    (`model.safetensors.index.json` + `model-0000i-of-0000n.safetensors`)."""
    from transformers import Gemma3TextModel

    shutil.copytree(src, dst)
    os.remove(os.path.join(dst, "model.safetensors"))
    stage = os.path.join(dst, "_stage")
    Gemma3TextModel.from_pretrained(src).save_pretrained(stage, max_shard_size=max_shard_size)
    for name in os.listdir(stage):
        if name.endswith((".safetensors", ".index.json")):
            shutil.move(os.path.join(stage, name), dst)
    shutil.rmtree(stage)
    return str(dst)


def test_sharded_checkpoint_loads_like_unsharded(model, st_checkpoint, tmp_path):
    from safetensors.numpy import load_file
    from safetensors.numpy import save_file

    path = write_sharded_checkpoint(st_checkpoint, tmp_path / "sharded")
    with open(os.path.join(path, "model.safetensors.index.json")) as f:
        shards = set(json.load(f)["weight_map"].values())
    assert len(shards) > 2, shards
    # A projection head file may be sharded too (here into one shard).
    dense = os.path.join(path, "2_Dense")
    shard = "model-00001-of-00001.safetensors"
    save_file(load_file(os.path.join(dense, "model.safetensors")), os.path.join(dense, shard))
    os.remove(os.path.join(dense, "model.safetensors"))
    with open(os.path.join(dense, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": {"linear.weight": shard}}, f)

    sharded = eg.EmbeddingGemma.from_preset(path)
    for a, b in zip(sharded.weights, model.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    np.testing.assert_array_equal(sharded.encode_query(TEXTS), model.encode_query(TEXTS))
    np.testing.assert_array_equal(
        sharded.encode_document(TEXTS), model.encode_document(TEXTS)
    )
    np.testing.assert_allclose(
        sharded.encode_query(TEXTS), rc.reference_embeddings(st_checkpoint, TEXTS, kind="query"),
        atol=ATOL, rtol=0,
    )
