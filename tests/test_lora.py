"""LoRA: fresh adapters change nothing, `fit` (also in mixed precision with
gradient caching) trains only them, and the model is saved merged (a plain
preset) or as the adapters alone, reloading to the same embeddings."""

import os

import keras
import numpy as np
import pytest

import keras_egemma as eg

EXAMPLES = [
    {"query": f"What is item {i}?", "positive": f"Item {i} is thing number {i}.",
     "negative": f"Nothing about {i} here."}
    for i in range(16)
]
TEXTS = ["a held-out text", "Item 3 is thing number 3.", "what about the river?"]
TARGETS_PER_BLOCK = ("query", "key", "value", "attention_output", "ffw_gating",
                     "ffw_gating_2", "ffw_linear")


def tiny(dtype=None):
    keras.utils.set_random_seed(0)
    return eg.EmbeddingGemma.from_preset("embeddinggemma_tiny", dtype=dtype)


def two_blocks(dtype=None):
    """Two blocks of the tiny preset's shape: a train step compiles faster."""
    keras.utils.set_random_seed(0)
    backbone = eg.EmbeddingGemmaBackbone(
        vocabulary_size=2048, num_layers=2, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=64, intermediate_dim=128, head_dim=32, sliding_window=8, dtype=dtype,
    )
    return eg.EmbeddingGemma(backbone, tiny().preprocessor, projection_units=(128, 64))


def values(weights):
    return [keras.ops.convert_to_numpy(w).copy() for w in weights]


@pytest.fixture(scope="module")
def trained():
    model = tiny()
    before = model.encode(TEXTS)
    # Compiled and its optimizer built first: enabling LoRA starts it afresh.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), mrl_dims=(64,))
    model.optimizer.build(model.trainable_variables)
    model.enable_lora(4, include_heads=True)
    frozen = [w for w in model.weights if "lora_kernel" not in w.path]
    frozen_before = values(frozen)
    fresh = model.encode(TEXTS)
    model.fit(EXAMPLES, batch_size=8, sequence_length=16, shuffle=False, verbose=0)
    return {"model": model, "before": before, "fresh": fresh, "frozen": frozen,
            "frozen_before": frozen_before}


def test_fresh_adapters_change_nothing_and_only_adapters_train(trained):
    model = trained["model"]
    np.testing.assert_allclose(trained["fresh"], trained["before"], atol=1e-6)
    assert model.lora == {"rank": 4, "alpha": 4.0, "include_heads": True}
    names = {w.path.rsplit("/", 2)[-2] for w in model.trainable_weights}
    assert names == set(TARGETS_PER_BLOCK) | {"dense_0", "dense_1"}
    layers = model.backbone.num_layers * len(TARGETS_PER_BLOCK) + 2
    assert len(model.trainable_weights) == 2 * layers
    assert all("lora_kernel" in w.path for w in model.trainable_weights)
    # The embedding table, norms and kernels are as they were.
    for before, after in zip(trained["frozen_before"], values(trained["frozen"])):
        np.testing.assert_array_equal(before, after)
    assert np.abs(model.encode(TEXTS) - trained["before"]).max() > 1e-3


def test_merged_preset_is_plain_and_embeds_the_same(trained, tmp_path):
    model = trained["model"]
    model.save_to_preset(tmp_path / "merged")
    reloaded = eg.EmbeddingGemma.from_preset(tmp_path / "merged")
    assert reloaded.lora is None
    assert not any("lora" in w.path for w in reloaded.weights)
    np.testing.assert_allclose(reloaded.encode(TEXTS), model.encode(TEXTS), atol=1e-6)
    # Saving leaves the model's adapters in place.
    assert model.lora is not None and len(model.trainable_weights) > 0


def test_adapter_file_round_trip(trained, tmp_path):
    model = trained["model"]
    path = tmp_path / "run.lora.h5"
    model.save_lora_weights(path)
    model.save_lora_weights(path)   # replaces its own file
    assert os.listdir(tmp_path) == ["run.lora.h5"]
    assert os.path.getsize(path) < 1_000_000
    base = tiny()
    base.load_lora_weights(path)
    assert base.lora == model.lora
    np.testing.assert_allclose(base.encode(TEXTS), model.encode(TEXTS), atol=1e-6)


def test_adapter_file_refusals(trained, tmp_path):
    model = trained["model"]
    with pytest.raises(ValueError, match=r"must end in `\.lora\.h5`"):
        model.save_lora_weights(tmp_path / "run.h5")
    other = tmp_path / "notes.lora.h5"
    other.write_text("mine")
    with pytest.raises(ValueError, match="is not a LoRA adapter file"):
        model.save_lora_weights(other)
    assert other.read_text() == "mine"
    with pytest.raises(eg.CheckpointError, match="truncated or corrupted"):
        tiny().load_lora_weights(other)
    with pytest.raises(ValueError, match="no LoRA adapters; call `enable_lora"):
        tiny().save_lora_weights(tmp_path / "none.lora.h5")
    path = tmp_path / "run.lora.h5"
    model.save_lora_weights(path)
    rank_8 = tiny()
    rank_8.enable_lora(8)
    with pytest.raises(ValueError, match="holds adapters with rank=4"):
        rank_8.load_lora_weights(path)


def test_bad_combinations_are_refused():
    model = tiny()
    for rank in (0, -1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="`rank` must be an int >= 1"):
            model.enable_lora(rank)
    with pytest.raises(ValueError, match="`lora_alpha` must be a positive"):
        model.enable_lora(4, lora_alpha=0)
    assert model.lora is None and len(model.trainable_weights) > 0
    model.enable_lora(4)
    model.enable_lora(4)   # the same again: nothing to do
    with pytest.raises(ValueError, match="already enabled .rank=4.*rank=8"):
        model.enable_lora(8)
    with pytest.raises(ValueError, match="Cannot quantize a model with LoRA"):
        model.quantize("int8")
    with pytest.raises(ValueError, match="Cannot quantization-aware train"):
        model.quantize_aware("int4")
    quantized = tiny()
    quantized.quantize("int8")
    with pytest.raises(ValueError, match=r"quantized \(int8\)"):
        quantized.enable_lora(4)
    qat = tiny()
    qat.quantize_aware("int8")
    with pytest.raises(ValueError, match=r"quantize_aware\(None\)"):
        qat.enable_lora(4)


def test_mixed_precision_and_gradient_caching(tmp_path):
    model = two_blocks("mixed_bfloat16")
    model.enable_lora(2)
    frozen = [w for w in model.weights if "lora_kernel" not in w.path]
    frozen_before = values(frozen)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), mrl_dims=(64,),
                  gradient_cache_chunk_size=4)
    model.fit(EXAMPLES[:8], batch_size=8, sequence_length=16, verbose=0)
    assert {w.dtype for w in model.trainable_weights} == {"float32"}
    for before, after in zip(frozen_before, values(frozen)):
        np.testing.assert_array_equal(before, after)
    layer = model.backbone.transformer_layers[0].ffw_linear
    assert np.abs(keras.ops.convert_to_numpy(layer.lora_kernel_b)).max() > 0
    model.save_to_preset(tmp_path / "merged")
    reloaded = eg.EmbeddingGemma.from_preset(tmp_path / "merged")
    assert reloaded.backbone.dtype_policy.name == "float32"
    # Merged in float32 (not rounded to bfloat16, the compute dtype).
    a, b = (keras.ops.convert_to_numpy(v) for v in (layer.lora_kernel_a, layer.lora_kernel_b))
    kernel = frozen_before[[w.path for w in frozen].index(f"{layer.path}/kernel")]
    merged = reloaded.backbone.transformer_layers[0].ffw_linear.kernel
    np.testing.assert_allclose(keras.ops.convert_to_numpy(merged), kernel + a @ b, atol=1e-6)


def test_backup_and_restore_resumes_the_adapters(tmp_path):
    # Keras alone saves each adapted kernel merged and restarts its adapters
    # at zero; a resumed run must continue the same adapters.
    def run(callbacks):
        model = two_blocks()
        model.enable_lora(2)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), mrl_dims=None)
        history = model.fit(EXAMPLES[:8], batch_size=4, epochs=2, sequence_length=16,
                            shuffle=False, callbacks=callbacks, verbose=0)
        return model, history

    straight, straight_history = run([])

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise RuntimeError("interrupted")

    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="interrupted"):
        run([keras.callbacks.BackupAndRestore(backup), Interrupt()])
    resumed, resumed_history = run([keras.callbacks.BackupAndRestore(backup)])
    assert len(resumed_history.history["loss"]) == 1
    np.testing.assert_allclose(resumed_history.history["loss"][-1],
                               straight_history.history["loss"][-1], rtol=1e-5, atol=1e-5)
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(b),
                                   keras.ops.convert_to_numpy(a), atol=1e-5, err_msg=a.path)
    np.testing.assert_allclose(resumed.encode(TEXTS), straight.encode(TEXTS), atol=1e-5)


def test_weights_file_keeps_adapters_and_loads_merged_without_lora(trained, tmp_path):
    model = trained["model"]
    path = str(tmp_path / "run.weights.h5")
    model.save_weights(path)
    again = tiny()
    again.enable_lora(4, include_heads=True)
    again.load_weights(path)
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(b),
                                      keras.ops.convert_to_numpy(a), err_msg=a.path)
    plain = tiny()
    plain.load_weights(path)
    assert plain.lora is None
    np.testing.assert_allclose(plain.encode(TEXTS), model.encode(TEXTS), atol=1e-5)
    other = tiny()
    other.enable_lora(4)
    with pytest.raises(ValueError, match="saved from a model with LoRA rank=4.*include_heads=True"):
        other.load_weights(path)


def test_keras_hub_backbone_enable_lora_is_refused():
    model = tiny()
    with pytest.raises(ValueError, match=r"call `model.enable_lora\(4\)` on the `EmbeddingGemma`"):
        model.backbone.enable_lora(4)
    assert model.lora is None
    assert not any("lora" in w.path for w in model.weights)
