"""EmbeddingGemma 2 beyond loading: the registered name resolves to its Hugging Face
repository, and `fit` then trains the tiny random model (embedding_gemma2_checkpoints) with the
paper's objective and MRL on the active backend (loss down, held-out recall up); gradient
caching gives the plain gradients; LoRA adapts the attention and feed-forward kernels and
saves merged or as adapters; int8 / int4 / mixed quantization keeps the embeddings close and
round-trips through a preset."""

import embedding_gemma2_checkpoints as e2
import keras
import numpy as np
import pytest
from test_gradient_cache import EXAMPLES
from test_training import recall_at_1
from test_training import synthetic_retrieval

import keras_egemma as eg
from keras_egemma.io import preset_loading
from keras_egemma.models.embedding_gemma2_backbone import EmbeddingGemma2Backbone

TEXTS = ["Which planet is known as the Red Planet? Mars has a thin atmosphere.", "short",
         "Venus is often called Earth's twin because of its similar size."]
# With this vocabulary the query prompt and a query take 31 tokens: at 40 the names that
# match a query to its passage are never cut.
SEQUENCE_LENGTH = 40


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, spm_path):
    return e2.build_embedding_gemma2_checkpoint(
        str(tmp_path_factory.mktemp("eg2_train")), spm_path=spm_path, seed=1
    )


def fresh(checkpoint):
    keras.utils.set_random_seed(0)
    return eg.EmbeddingGemma.from_preset(checkpoint)


def values(weights):
    return [keras.ops.convert_to_numpy(w).copy() for w in weights]


def test_registered_name_loads_from_hugging_face_and_fit_raises_held_out_recall(checkpoint):
    asked = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(preset_loading, "download_hf", lambda repo: asked.append(repo) or checkpoint)
        keras.utils.set_random_seed(0)
        model = eg.EmbeddingGemma.from_preset("embeddinggemma2")
    assert asked == ["google/embeddinggemma-2"]
    assert isinstance(model.backbone, EmbeddingGemma2Backbone)

    held_out = synthetic_retrieval(50, seed=2)
    before = recall_at_1(model, held_out)
    scalars = values(b.layer_scalar for b in model.backbone.transformer_layers)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), mrl_dims=(24, 8))
    history = model.fit(synthetic_retrieval(640, seed=1), batch_size=16, epochs=2,
                        sequence_length=SEQUENCE_LENGTH, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] - 3.0, losses
    # Measured 0.04 -> 0.62 (JAX), 0.50 (TensorFlow), 0.58 (PyTorch); chance is 0.02.
    after = recall_at_1(model, held_out)
    assert after > max(0.35, before + 0.25), (before, after)
    # The checkpoint's per-layer scalars are buffers, not trained.
    for block, before_scalar in zip(model.backbone.transformer_layers, scalars):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(block.layer_scalar),
                                      before_scalar)


def one_step_gradients(checkpoint, chunk_size):
    model = fresh(checkpoint)
    before = values(model.trainable_weights)
    model.compile(optimizer=keras.optimizers.SGD(1.0), mrl_dims=(24, 8),
                  gradient_cache_chunk_size=chunk_size)
    history = model.fit(EXAMPLES, batch_size=8, epochs=1, sequence_length=20, shuffle=False,
                        verbose=0)
    return history.history, [b - a for a, b in zip(values(model.trainable_weights), before)]


def test_gradient_cache_equals_plain_gradients(checkpoint):
    plain_history, plain = one_step_gradients(checkpoint, None)
    cached_history, cached = one_step_gradients(checkpoint, 2)
    for key in ("loss", "nce", "spread_out"):
        # Losses of ~13: float32 rounding in another summation order (measured 1.2e-5).
        np.testing.assert_allclose(cached_history[key], plain_history[key], atol=1e-5,
                                   rtol=3e-6)
    # Every weight gets a gradient, the per-layer embedding and PLE gates included.
    assert min(np.abs(g).max() for g in plain) > 0
    for g_cached, g_plain in zip(cached, plain):
        # Relative to each tensor's gradient scale (up to ~20 here): float32 sums taken
        # in another order (measured up to 1.0e-5).
        scale = max(np.abs(g_plain).max(), 1.0)
        np.testing.assert_allclose(g_cached / scale, g_plain / scale, atol=3e-5, rtol=0)


def test_lora_trains_only_adapters_and_saves_merged_or_as_adapters(checkpoint, tmp_path):
    model = fresh(checkpoint)
    float_embeddings = model.encode(TEXTS)
    model.enable_lora(2)
    trainable = {v.path for v in model.trainable_weights}
    assert trainable and all("lora" in path for path in trainable), sorted(trainable)[:4]
    # Every block's attention and feed-forward kernels are adapted.
    assert len(trainable) == 2 * 7 * model.backbone.num_layers
    frozen = [w for w in model.weights if "lora_kernel" not in w.path]
    frozen_before = values(frozen)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), mrl_dims=(24, 8))
    history = model.fit(synthetic_retrieval(16, seed=2), batch_size=16, epochs=1,
                        sequence_length=24, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for before, after in zip(frozen_before, values(frozen)):
        np.testing.assert_array_equal(before, after)
    tuned = model.encode(TEXTS)
    assert np.abs(tuned - float_embeddings).max() > 1e-3

    model.save_to_preset(tmp_path / "merged")
    merged = eg.EmbeddingGemma.from_preset(tmp_path / "merged")
    assert isinstance(merged.backbone, EmbeddingGemma2Backbone) and merged.lora is None
    assert not any("lora" in w.path for w in merged.weights)
    np.testing.assert_allclose(merged.encode(TEXTS), tuned, atol=1e-6)

    model.save_lora_weights(tmp_path / "run.lora.h5")
    base = fresh(checkpoint)
    base.load_lora_weights(tmp_path / "run.lora.h5")
    assert base.lora == model.lora
    np.testing.assert_allclose(base.encode(TEXTS), tuned, atol=1e-6)


@pytest.fixture(scope="module")
def float_embeddings(checkpoint):
    return eg.EmbeddingGemma.from_preset(checkpoint).encode(TEXTS, task="document")


# Random weights, blocks of 8 (the PLE width is 16, the hidden size 32). Measured minimum
# cosines (JAX and PyTorch alike): int8 0.998, int4 0.914, mixed 0.953.
@pytest.mark.parametrize("mode, bound", [("int8", 0.99), ("int4", 0.9), ("mixed", 0.92)])
def test_quantized_is_close_to_float_and_round_trips(checkpoint, float_embeddings, mode, bound,
                                                     tmp_path):
    model = eg.EmbeddingGemma.from_preset(checkpoint)
    model.quantize(mode, block_size=8)
    quantized = model.encode(TEXTS, task="document")
    cosine = np.sum(quantized * float_embeddings, axis=1).min()
    assert bound <= cosine < 1 - 1e-7, cosine
    modes = {layer.path: layer.quantization_mode for layer in model._flatten_layers()}
    rest = "int8" if mode == "int8" else "int4"
    attention = "int4" if mode == "int4" else "int8"
    for path in ("token_embedding", "per_layer_embedding/projection", "encoder_block_1/ple_gate",
                 "encoder_block_1/ple_projection", "encoder_block_1/ffw_linear",
                 "projection_head/dense_0"):
        assert modes[path] == rest, (path, modes[path])
    assert modes["encoder_block_1/attention/query"] == attention
    if mode == "mixed":  # int8 and int4 layers both: one round trip, to keep the test short
        model.save_to_preset(tmp_path / "preset")
        restored = eg.EmbeddingGemma.from_preset(tmp_path / "preset")
        np.testing.assert_array_equal(restored.encode(TEXTS, task="document"), quantized)
