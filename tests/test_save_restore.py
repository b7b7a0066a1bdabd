"""Saving: presets are replaced atomically; training checkpoints restore the
optimizer bit-exactly.

Failures tried, and what each leaves behind:

| failure | result |
|---|---|
| `save_to_preset` dies while writing weights over an existing preset | the old preset, intact, loads as before; no temporary folder is left |
| the same into a new folder | no folder at all |
| `save_to_preset` onto a folder that is not a keras_egemma preset | `ValueError`, folder untouched |
| `save_to_preset` onto an existing preset | replaced by the new one |

(`save_to_preset` -> `from_preset` and `.keras` files without optimizer state
are bit-exact in `tests/test_model.py`.)
"""

import os

import keras
import numpy as np
import pytest

import keras_egemma as eg
from keras_egemma.models.backbone import EmbeddingGemmaBackbone

TEXTS = ["Which planet is known as the Red Planet?", "Venus is the hottest planet."]


def as_numpy(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


def assert_same_weights(a, b):
    assert [w.path for w in a.weights] == [w.path for w in b.weights]
    for x, y in zip(as_numpy(a.weights), as_numpy(b.weights)):
        np.testing.assert_array_equal(x, y)


def fail_while_writing_weights(monkeypatch):
    def save_weights(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"\x89HDF\r\n\x1a\n half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(EmbeddingGemmaBackbone, "save_weights", save_weights)


def test_interrupted_save_keeps_the_old_preset(tiny_model, tmp_path, monkeypatch):
    path = tmp_path / "preset"
    tiny_model.save_to_preset(str(path))
    before = sorted(os.listdir(tmp_path))
    other = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    other.backbone.final_norm.scale.assign(np.full(other.backbone.hidden_dim, 0.5, "float32"))
    with monkeypatch.context() as patch:
        fail_while_writing_weights(patch)
        with pytest.raises(OSError, match="No space left"):
            other.save_to_preset(str(path))
        with pytest.raises(OSError, match="No space left"):
            other.save_to_preset(str(tmp_path / "new"))
    assert sorted(os.listdir(tmp_path)) == before
    loaded = eg.EmbeddingGemma.from_preset(str(path))
    assert_same_weights(loaded, tiny_model)
    np.testing.assert_array_equal(loaded.encode(TEXTS), tiny_model.encode(TEXTS))
    # Without the failure, the new model replaces the old preset.
    other.save_to_preset(str(path))
    assert sorted(os.listdir(tmp_path)) == before
    assert_same_weights(eg.EmbeddingGemma.from_preset(str(path)), other)


def test_save_refuses_a_folder_that_is_not_a_preset(tiny_model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not a keras_egemma preset"):
        tiny_model.save_to_preset(str(tmp_path))
    assert os.listdir(tmp_path) == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    tiny_model.save_to_preset(str(tmp_path / "empty"))
    assert "model.weights.h5" in os.listdir(tmp_path / "empty")


def test_training_checkpoint_restores_weights_and_optimizer_bit_exactly(tmp_path):
    keras.utils.set_random_seed(0)
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), mrl_dims=(128, 32))
    examples = [{"query": f"query {i}", "positive": f"document {i} " * (i + 1)}
                for i in range(8)]
    checkpoint = str(tmp_path / "epoch.keras")
    model.fit(examples, batch_size=4, sequence_length=16, shuffle=False, verbose=0,
              callbacks=[keras.callbacks.ModelCheckpoint(checkpoint)])
    loaded = keras.saving.load_model(checkpoint)
    assert_same_weights(loaded, model)
    saved_slots = as_numpy(model.optimizer.variables)
    restored_slots = as_numpy(loaded.optimizer.variables)
    assert [v.path for v in loaded.optimizer.variables] == [
        v.path for v in model.optimizer.variables
    ]
    # Two steps taken, so the Adam moments are not their zero initial values.
    assert int(loaded.optimizer.iterations) == 2
    assert sum(np.abs(s).sum() for s in saved_slots[2:]) > 0
    for x, y in zip(saved_slots, restored_slots):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(loaded.encode(TEXTS), model.encode(TEXTS))


@pytest.mark.parametrize("mode", ["int8", "int4", "mixed"])
def test_loaded_quantized_preset_saves_again_bit_exactly(mode, tmp_path):
    """A quantized preset, loaded and saved again, loads to the same model
    (Keras' saving once read a rebuilt layer's whole policy map as float)."""
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    model.quantize(mode, block_size=16)
    model.save_to_preset(tmp_path / "first")
    loaded = eg.EmbeddingGemma.from_preset(tmp_path / "first")
    loaded.save_to_preset(tmp_path / "second")
    again = eg.EmbeddingGemma.from_preset(tmp_path / "second")
    texts = ["Which planet is known as the Red Planet?", "Venus is the hottest planet."]
    np.testing.assert_array_equal(model.encode(texts), again.encode(texts))
    assert again.quantization == model.quantization


def test_large_tensors_are_saved_page_aligned_and_mapped_when_loaded(tmp_path, monkeypatch):
    """Tensors of `MAPPED_MIN_BYTES` or more start on a page in the saved
    file; loading (JAX) maps them read-only instead of reading them, and the
    model embeds exactly as before."""
    import h5py

    from keras_egemma.io import mapped_weights

    monkeypatch.setattr(mapped_weights, "MAPPED_MIN_BYTES", 4096)
    model = eg.EmbeddingGemma.from_preset("embeddinggemma_tiny")
    model.save_to_preset(tmp_path / "p")
    with h5py.File(tmp_path / "p" / "model.weights.h5") as f:
        table = f["layers/embedding/vars/0"]
        assert table.nbytes >= 4096 and table.id.get_offset() % mapped_weights.PAGE == 0
    loaded = eg.EmbeddingGemma.from_preset(tmp_path / "p")
    texts = ["Which planet is known as the Red Planet?", "Venus is the hottest planet."]
    np.testing.assert_array_equal(model.encode(texts), loaded.encode(texts))
    if keras.backend.backend() == "jax":
        # The table's buffer lies in a mapping of the weights file.
        pointer = loaded.backbone.token_embedding.embeddings.value.unsafe_buffer_pointer()
        path = str(tmp_path / "p" / "model.weights.h5")
        with open("/proc/self/maps") as f:
            regions = [line.split() for line in f]
        assert any(
            len(r) == 6 and r[5] == path
            and int(r[0].split("-")[0], 16) <= pointer < int(r[0].split("-")[1], 16)
            for r in regions
        )
