"""Mixed-precision (`mixed_bfloat16`) training tracks float32 training step by
step, and its presets are saved in float32 unless bfloat16 is asked for."""

import json
import os

import h5py
import keras
import numpy as np
import pytest

import keras_egemma as eg

RNG = np.random.default_rng(0)
WORDS = ("planet mars venus red hot cold water river mountain city book read write code "
         "python loop file line").split()


def sentence():
    return " ".join(RNG.choice(WORDS, 6))


EXAMPLES = [{"query": sentence(), "positive": sentence(), "negative": sentence()}
            for _ in range(48)]
HELD_OUT = [sentence() for _ in range(16)]


class StepLosses(keras.callbacks.Callback):
    """Each step's own loss (Keras logs the running mean of the epoch)."""

    def on_train_begin(self, logs=None):
        self.means = []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(float(logs["loss"]))

    @property
    def losses(self):
        means = np.array(self.means, "float64")
        steps = np.arange(1, len(means) + 1)
        return means * steps - np.concatenate([[0.0], means[:-1] * steps[:-1]])


def train(dtype, **compile_args):
    keras.utils.set_random_seed(0)
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny", dtype=dtype)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), **compile_args)
    steps = StepLosses()
    model.fit(EXAMPLES, batch_size=8, sequence_length=16, padding="max_length",
              shuffle=False, verbose=0, callbacks=[steps])
    return model, steps.losses


@pytest.fixture(scope="module")
def float32_run():
    return train("float32")


@pytest.fixture(scope="module")
def mixed_run():
    # The documented one-liner, with gradient caching (which gives the plain
    # gradients, tests/test_gradient_cache.py).
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        return train(None, gradient_cache_chunk_size=4)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def test_mixed_bfloat16_training_tracks_float32(float32_run, mixed_run):
    model_32, losses_32 = float32_run
    model_mixed, losses_mixed = mixed_run
    policy = model_mixed.backbone.dtype_policy
    assert (policy.compute_dtype, policy.variable_dtype) == ("bfloat16", "float32")
    assert model_mixed.backbone.token_embedding.embeddings.dtype == "float32"
    assert len(losses_32) == 6
    np.testing.assert_array_less(np.abs(losses_mixed - losses_32), 0.05)
    cosine = (model_32.encode(HELD_OUT) * model_mixed.encode(HELD_OUT)).sum(-1)
    assert cosine.min() > 0.99


def _preset_dtypes(folder):
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        config_dtype = json.load(f)["config"]["dtype"]["config"]["name"]
    stored = set()
    with h5py.File(os.path.join(folder, "model.weights.h5"), "r") as f:
        f.visititems(lambda _, item: stored.add(
            item.attrs.get("dtype", str(item.dtype))) if isinstance(item, h5py.Dataset) else None)
    return config_dtype, stored


def test_mixed_model_is_saved_as_float32(mixed_run, tmp_path):
    model, _ = mixed_run
    model.save_to_preset(tmp_path / "preset")
    assert _preset_dtypes(tmp_path / "preset") == ("float32", {"float32"})
    # The model is unchanged by saving.
    assert model.backbone.dtype_policy.name == "mixed_bfloat16"
    reloaded = eg.EmbeddingGemma.from_preset(tmp_path / "preset")
    assert reloaded.backbone.dtype_policy.name == "float32"
    for saved, loaded in zip(model.weights, reloaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(saved),
                                      keras.ops.convert_to_numpy(loaded))
    again = eg.EmbeddingGemma.from_preset(tmp_path / "preset", dtype="mixed_bfloat16")
    np.testing.assert_allclose(again.encode(HELD_OUT), model.encode(HELD_OUT), atol=1e-6)


def test_bfloat16_preset_on_request(mixed_run, tmp_path):
    model, _ = mixed_run
    model.save_to_preset(tmp_path / "bf16", dtype="bfloat16")
    assert _preset_dtypes(tmp_path / "bf16") == ("bfloat16", {"bfloat16"})
    assert [p for p in os.listdir(tmp_path) if p != "bf16"] == []
    reloaded = eg.EmbeddingGemma.from_preset(tmp_path / "bf16", dtype="bfloat16")
    assert reloaded.backbone.token_embedding.embeddings.dtype == "bfloat16"
    cosine = (reloaded.encode(HELD_OUT) * model.encode(HELD_OUT)).sum(-1)
    assert cosine.min() > 0.99
    # And back to float32 from the bfloat16 model.
    reloaded.save_to_preset(tmp_path / "f32", dtype="float32")
    assert _preset_dtypes(tmp_path / "f32") == ("float32", {"float32"})


def test_bad_saved_dtypes_are_refused(mixed_run, tmp_path):
    model, _ = mixed_run
    for dtype in ("float16", "mixed_bfloat16", "int8"):
        with pytest.raises(ValueError, match="saved in one of"):
            model.save_to_preset(tmp_path / "x", dtype=dtype)
    assert not os.path.exists(tmp_path / "x")
