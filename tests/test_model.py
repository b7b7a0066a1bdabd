"""The task model on the bundled tiny preset: shapes, invariances, round trips."""

import contextlib
import os
import warnings
import weakref

import keras
import numpy as np
import pytest
from numpy_reference import l2_normalize

import keras_egemma as eg

TEXTS = [
    "Which planet is known as the Red Planet?",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "x",
    "The quick brown fox jumps over the lazy dog. " * 6,
]


def test_encode_shapes_dtype_and_norm(tiny_model):
    q = tiny_model.encode_query(TEXTS)
    assert q.shape == (4, 128) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    single = tiny_model.encode_query(TEXTS[0])
    assert single.shape == (128,)
    np.testing.assert_allclose(single, q[0], atol=1e-6)


def test_prompts_change_embeddings_and_match_literal_prefix(tiny_model):
    q = tiny_model.encode_query(TEXTS[:2])
    literal = tiny_model.encode(TEXTS[:2], prompt="task: search result | query: ")
    np.testing.assert_array_equal(q, literal)
    d = tiny_model.encode_document(TEXTS[:2])
    none_title = tiny_model.encode_document(TEXTS[:2], titles=[None, None])
    np.testing.assert_array_equal(d, none_title)
    titled = tiny_model.encode_document(TEXTS[:2], titles=["Mars", "Mars"])
    literal = tiny_model.encode(TEXTS[:2], prompt="title: Mars | text: ")
    np.testing.assert_array_equal(titled, literal)
    assert not np.allclose(q, d)


def test_embedding_independent_of_batch_and_padding(tiny_model):
    alone = np.stack([tiny_model.encode(t, task="STS") for t in TEXTS])
    together = tiny_model.encode(TEXTS, task="STS", batch_size=4)
    pairs = tiny_model.encode(TEXTS, task="STS", batch_size=2)
    np.testing.assert_allclose(together, alone, atol=1e-6)
    np.testing.assert_allclose(pairs, alone, atol=1e-6)
    # Direct call with heavy extra padding.
    ids = tiny_model.preprocessor.tokenize_texts(TEXTS[:1])[0]
    for width in (len(ids), len(ids) + 50, 300):
        token_ids = np.zeros((1, width), "int32")
        token_ids[0, : len(ids)] = ids
        mask = (np.arange(width) < len(ids)).astype("int32")[None]
        out = keras.ops.convert_to_numpy(
            tiny_model({"token_ids": token_ids, "padding_mask": mask})
        )
        np.testing.assert_allclose(out[0], tiny_model.encode(TEXTS[0]), atol=1e-6)


def test_length_sorted_batching_restores_order(tiny_model):
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(23)]
    together = tiny_model.encode(texts, batch_size=5, verbose=False)
    alone = np.stack([tiny_model.encode(t) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_matryoshka_equals_truncate_then_normalize(tiny_model):
    full = tiny_model.encode(TEXTS, task="Clustering")
    for dim in (64, 32, 16):
        small = tiny_model.encode(TEXTS, task="Clustering", dim=dim)
        np.testing.assert_allclose(small, l2_normalize(full[:, :dim]), atol=1e-6)


def test_similarity_is_cosine(tiny_model):
    a = tiny_model.encode_query(TEXTS[:2])
    b = tiny_model.encode_document(TEXTS)
    np.testing.assert_allclose(tiny_model.similarity(a, b), a @ b.T, atol=1e-6)
    raw = np.array([[3.0, 4.0]])
    np.testing.assert_allclose(tiny_model.similarity(raw, raw), [[1.0]], atol=1e-6)
    with pytest.raises(ValueError, match="different sizes"):
        tiny_model.similarity(a, b[:, :64])


def test_truncation_warns_once(tiny_model):
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    long_text = "word " * 2000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.encode([long_text, long_text])
        model.encode([long_text])
    messages = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert len(messages) == 1
    assert "2 text(s)" in messages[0] and "sequence_length=512" in messages[0]


@pytest.mark.parametrize(
    "texts, error, match",
    [
        ([], ValueError, "empty list"),
        (None, ValueError, "is None"),
        (["ok", 3], TypeError, r"texts\[1\]` is a int"),
        (["ok", None], TypeError, r"texts\[1\]` is a NoneType"),
        (42, TypeError, "must be a string or a list of strings"),
    ],
)
def test_bad_texts(tiny_model, texts, error, match):
    with pytest.raises(error, match=match):
        tiny_model.encode(texts)


def test_bad_task_dim_and_titles(tiny_model):
    with pytest.raises(ValueError, match="Unknown task 'retreival'.*Retrieval-query"):
        tiny_model.encode(["a"], task="retreival")
    for dim in (0, 129, -5, 1.5):
        with pytest.raises(ValueError, match="Matryoshka `dim`"):
            tiny_model.encode(["a"], dim=dim)
    with pytest.raises(ValueError, match="1 titles for 2 texts"):
        tiny_model.encode_document(["a", "b"], titles=["t"])
    with pytest.raises(ValueError, match="at most one of"):
        tiny_model.encode(["a"], task="STS", prompt="x: ")


def test_float16_is_refused():
    with pytest.raises(ValueError, match="does not support float16.*bfloat16"):
        eg.EmbeddingGemma.from_preset("embeddinggemma_tiny", dtype="float16")
    with pytest.raises(ValueError, match="float16"):
        eg.EmbeddingGemmaBackbone(
            vocabulary_size=10, num_layers=1, num_query_heads=1, num_key_value_heads=1,
            hidden_dim=8, intermediate_dim=8, head_dim=8, dtype="mixed_float16",
        )
    keras.config.set_dtype_policy("mixed_float16")
    with pytest.raises(ValueError, match="float16"):
        eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")


def test_bfloat16_is_close_to_float32(tiny_model):
    bf16 = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny", dtype="bfloat16")
    a, b = tiny_model.encode(TEXTS), bf16.encode(TEXTS)
    assert b.dtype == np.float32
    assert np.min(np.sum(a * b, axis=1)) > 0.99


def test_save_to_preset_round_trips_bit_exactly(tiny_model, tmp_path):
    tiny_model.save_to_preset(str(tmp_path / "p"))
    loaded = eg.EmbeddingGemma.from_preset(str(tmp_path / "p"))
    for w1, w2 in zip(tiny_model.weights, loaded.weights):
        assert w1.path == w2.path
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w1), keras.ops.convert_to_numpy(w2))
    np.testing.assert_array_equal(loaded.encode(TEXTS), tiny_model.encode(TEXTS))
    assert loaded.preprocessor.prompts == tiny_model.preprocessor.prompts
    assert loaded.get_config() == tiny_model.get_config()


def test_keras_file_round_trip(tiny_model, tmp_path):
    path = str(tmp_path / "model.keras")
    tiny_model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, eg.EmbeddingGemma)
    np.testing.assert_array_equal(loaded.encode(TEXTS), tiny_model.encode(TEXTS))


def test_poolers_build_and_round_trip(tiny_model, tmp_path):
    for pooling in ("first", "last", "attention"):
        model = eg.EmbeddingGemma(
            tiny_model.backbone, tiny_model.preprocessor, pooling=pooling,
            projection_units=(32, 16),
        )
        out = model.encode(TEXTS)
        assert out.shape == (4, 16)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
        clone = eg.EmbeddingGemma.from_config(model.get_config())
        assert clone.pooling == pooling


@pytest.mark.parametrize("missing", ["model.weights.h5", "task.json", "assets/tokenizer/vocabulary.spm"])
def test_preset_with_missing_file(tiny_model, tmp_path, missing):
    path = tmp_path / "p"
    tiny_model.save_to_preset(str(path))
    os.remove(path / missing)
    with pytest.raises(eg.CheckpointError, match=f"{os.path.basename(missing)} is missing"):
        eg.EmbeddingGemma.from_preset(str(path))


def test_preset_with_truncated_weights(tiny_model, tmp_path):
    path = tmp_path / "p"
    tiny_model.save_to_preset(str(path))
    weights = path / "model.weights.h5"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(eg.CheckpointError, match="model.weights.h5 is truncated or corrupted"):
        eg.EmbeddingGemma.from_preset(str(path))


def test_unknown_preset_name():
    with pytest.raises(ValueError, match="Unknown preset 'embeddinggemma_3b'"):
        eg.EmbeddingGemma.from_preset("embeddinggemma_3b")


def test_backbone_config_round_trip(tiny_model):
    config = tiny_model.backbone.get_config()
    clone = eg.EmbeddingGemmaBackbone.from_config(config)
    assert clone.get_config() == config
    assert config["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    for key in ("sliding_window", "global_rope_wavelength", "local_rope_wavelength",
                "query_pre_attn_scalar", "layer_norm_epsilon", "dtype"):
        assert key in config


def test_eager_call_frees_each_block_output_once_used(tiny_model):
    """An eager forward pass (PyTorch's inference path) keeps no block's output
    past the next block: Keras' functional graph runner kept them all, every
    layer's activations at once."""
    blocks = tiny_model.backbone.transformer_layers
    outputs = []
    alive_before_block = []

    def recording(block):
        call = block.call

        def wrapped(x, *args, **kwargs):
            older = outputs[:-1]  # the last one is this block's input
            alive_before_block.append(sum(ref() is not None for ref in older))
            y = call(x, *args, **kwargs)
            outputs.append(weakref.ref(y))
            return y

        return wrapped

    # Without autograd on PyTorch, which keeps what the backward pass needs.
    no_grad = contextlib.nullcontext()
    if keras.backend.backend() == "torch":
        import torch

        no_grad = torch.inference_mode()
    try:
        for block in blocks:
            block.__dict__["call"] = recording(block)
        ids = np.ones((2, 16), "int32")
        with no_grad:
            tiny_model.backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})
    finally:
        for block in blocks:
            block.__dict__.pop("call", None)
    assert len(alive_before_block) == len(blocks) > 2
    assert alive_before_block == [0] * len(blocks)
